package com.sparrowrecsys.online;

import com.sparrowrecsys.online.datamanager.DataManager;
import com.sparrowrecsys.online.service.MovieService;
import com.sparrowrecsys.online.service.RecForYouService;
import com.sparrowrecsys.online.service.RecommendationService;
import com.sparrowrecsys.online.service.SimilarMovieService;
import com.sparrowrecsys.online.service.UserService;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.servlet.DefaultServlet;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;
import org.eclipse.jetty.util.resource.Resource;

import java.io.File;
import java.net.InetSocketAddress;
import java.net.URL;

/**
 * TEST STAND-IN of the host's main class: web root = the folder of the classpath resource
 * {@code /webroot/index.html}, data loaded from it at start-up, Jetty on 0.0.0.0:$PORT (6010)
 * with the static files and the JSON services.
 */
public class RecSysServer {
    private static final int DEFAULT_PORT = 6010;

    public static void main(String[] args) throws Exception {
        String portEnv = System.getenv("PORT");
        int port = portEnv == null ? DEFAULT_PORT : Integer.parseInt(portEnv);
        URL index = RecSysServer.class.getResource("/webroot/index.html");
        if (index == null) {
            throw new IllegalStateException("no /webroot/index.html on the classpath");
        }
        File webRoot = new File(index.toURI()).getParentFile();
        String base = webRoot.getPath() + File.separator;
        DataManager.getInstance().loadData(base + "sampledata/movies.csv", base + "sampledata/links.csv",
                base + "sampledata/ratings.csv", base + "modeldata/item2vecEmb.csv",
                base + "modeldata/userEmb.csv", "i2vEmb", "uEmb");

        ServletContextHandler context = new ServletContextHandler();
        context.setContextPath("/");
        context.setBaseResource(Resource.newResource(webRoot));
        context.setWelcomeFiles(new String[]{"index.html"});
        context.addServlet(DefaultServlet.class, "/");
        context.addServlet(new ServletHolder(new MovieService()), "/getmovie");
        context.addServlet(new ServletHolder(new UserService()), "/getuser");
        context.addServlet(new ServletHolder(new SimilarMovieService()), "/getsimilarmovie");
        context.addServlet(new ServletHolder(new RecommendationService()), "/getrecommendation");
        context.addServlet(new ServletHolder(new RecForYouService()), "/getrecforyou");

        Server server = new Server(new InetSocketAddress("0.0.0.0", port));
        server.setHandler(context);
        System.out.println("RecSys Server has started.");
        server.start();
        server.join();
    }
}
