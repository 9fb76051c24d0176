package io.sparrowllm.bridge;

import com.sparrowrecsys.online.datamanager.DataManager;
import com.sparrowrecsys.online.service.MovieService;
import com.sparrowrecsys.online.service.RecForYouService;
import com.sparrowrecsys.online.service.RecommendationService;
import com.sparrowrecsys.online.service.SimilarMovieService;
import com.sparrowrecsys.online.service.UserService;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.servlet.DefaultServlet;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;
import org.eclipse.jetty.util.resource.Resource;
import py4j.GatewayServer;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.Paths;

/**
 * Drop-in main class for the host: everything {@code RecSysServer} does, plus the rerank stage in
 * front of /getrecforyou, the read-only comparison page under /sparrow-llm/ and the Py4J gateway
 * the Python side connects to. A deploy keeps its classpath, appends the bridge jar and changes
 * only the main class.
 */
public final class BridgeLauncher {
    /** The gateway never listens beyond this machine. */
    static final String GATEWAY_HOST = "127.0.0.1";

    private BridgeLauncher() {
    }

    public static void main(String[] args) {
        Path webRoot;
        BridgeConfig config;
        try {
            webRoot = findWebRoot();
            config = BridgeConfig.fromEnvironment(System.getenv(), webRoot);
        } catch (IllegalArgumentException | IllegalStateException e) {
            System.err.println("sparrow-llm: " + e.getMessage());
            System.exit(2);
            return;
        }
        if (config.exitOnStdinEof()) {
            exitOnEndOfInput(System.in);
        }
        try {
            run(config, webRoot);
        } catch (Exception e) {
            System.err.println("sparrow-llm: cannot start: " + e);
            System.exit(1);
        }
    }

    private static void run(BridgeConfig config, Path webRoot) throws Exception {
        warnAboutLegacyStore(config);
        if (config.connectFile().startsWith(config.privateDir())) {
            ConnectFile.makePrivate(config.privateDir());
        }
        loadHostData(webRoot);
        MissQueue misses = new MissQueue(config.queueMax());
        RecordStore store = RecordStore.open(config);
        Server server = buildServer(config, webRoot, store, misses);
        System.out.println("RecSys Server has started.");
        server.start();
        GatewayServer gateway = new GatewayServer.GatewayServerBuilder()
                .entryPoint(new RecallEntryPoint(misses, config.fallbackModel()))
                .javaAddress(InetAddress.getByName(GATEWAY_HOST))
                .javaPort(config.gatewayPort())
                .authToken(config.token())
                .serverSocketFactory(new NoDelayServerSocketFactory())
                .build();
        gateway.start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            ConnectFile.delete(config.connectFile());
            gateway.shutdown();
            try {
                server.stop();
            } catch (Exception e) {
                Log.warn("stopping Jetty: " + e);
            }
            store.close();
        }, "sparrow-llm-shutdown"));
        ConnectFile.write(config.connectFile(), GATEWAY_HOST, gateway.getListeningPort(), config.token(), httpPort(server));
        System.out.println("sparrow-llm bridge ready: http=" + httpPort(server) + " gateway=" + GATEWAY_HOST + ":"
                + gateway.getListeningPort() + " connect-file=" + config.connectFile());
        server.join();
    }

    /**
     * The opt-in parent watchdog (SPARROW_LLM_EXIT_ON_STDIN_EOF=1): the Python parent starts the JVM
     * with stdin a pipe it keeps open and never writes, so end of input means the parent is gone,
     * and the JVM exits (shutdown hooks stop Jetty and the gateway and delete the connect file).
     * Anything written to stdin is read and ignored.
     */
    static Thread exitOnEndOfInput(InputStream in) {
        Thread watchdog = new Thread(() -> {
            byte[] buffer = new byte[256];
            try {
                while (in.read(buffer) >= 0) {
                    // ignored: only the end of input matters
                }
                Log.warn("standard input closed (SPARROW_LLM_EXIT_ON_STDIN_EOF=1): the parent process is gone, exiting");
            } catch (IOException e) {
                Log.warn("standard input failed (SPARROW_LLM_EXIT_ON_STDIN_EOF=1), exiting: " + e);
            }
            System.exit(0);
        }, "sparrow-llm-stdin-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        return watchdog;
    }

    /**
     * One warning line when the old default store folder {@code <webroot>/modeldata/sparrow-llm}
     * exists and is not the configured store: its records are neither read nor served; the Python
     * side moves them (any {@code sparrow-llm} command). Nothing is moved here.
     *
     * @return whether it warned
     */
    static boolean warnAboutLegacyStore(BridgeConfig config) {
        Path legacy = config.legacyStoreDir();
        if (!Files.exists(legacy, LinkOption.NOFOLLOW_LINKS) || isSameFolder(legacy, config.storeDir())) {
            return false;
        }
        Log.warn("found store records at the old default folder " + legacy + " (not read, not served; the store is now "
                + config.storeDir() + "): any sparrow-llm command moves them");
        return true;
    }

    private static boolean isSameFolder(Path a, Path b) {
        if (a.toAbsolutePath().normalize().equals(b.toAbsolutePath().normalize())) {
            return true;
        }
        try {
            return Files.exists(b) && Files.isSameFile(a, b);
        } catch (IOException e) {
            return false;
        }
    }

    /** The host's web root: the folder of the classpath resource /webroot/index.html. */
    static Path findWebRoot() {
        URL index = BridgeLauncher.class.getResource("/webroot/index.html");
        if (index == null) {
            throw new IllegalStateException("no /webroot/index.html on the classpath:"
                    + " put the folder that holds the host's webroot/ on the classpath");
        }
        if (!"file".equals(index.getProtocol())) {
            throw new IllegalStateException("the web root must be a folder on the classpath, found " + index);
        }
        try {
            return Paths.get(index.toURI()).getParent();
        } catch (URISyntaxException e) {
            throw new IllegalStateException("cannot use the web root " + index + ": " + e.getMessage(), e);
        }
    }

    /** Loads the host's data the way the host's main does, from the same files. */
    static void loadHostData(Path webRoot) {
        DataManager.getInstance().loadData(file(webRoot, "sampledata/movies.csv"), file(webRoot, "sampledata/links.csv"),
                file(webRoot, "sampledata/ratings.csv"), file(webRoot, "modeldata/item2vecEmb.csv"),
                file(webRoot, "modeldata/userEmb.csv"), "i2vEmb", "uEmb");
    }

    /** The host's Jetty server (static files, its services) with our stage and page; not started. */
    static Server buildServer(BridgeConfig config, Path webRoot, RecordStore store, MissQueue misses) throws IOException {
        PluginModels models = new PluginModels(config, store);
        ServletContextHandler context = new ServletContextHandler();
        context.setContextPath("/");
        context.setBaseResource(Resource.newResource(webRoot.toFile()));
        context.setWelcomeFiles(new String[]{"index.html"});
        // The host's static files as the host serves them, but never the store (wherever it is), the old default
        // folder, the plugin's home (connect file, log) nor a connect file kept elsewhere, even through a link.
        context.addServlet(new ServletHolder("default", new HostStaticServlet(webRoot, config.storeDir(),
                config.legacyStoreDir(), config.home(), config.connectFile())), "/");
        context.addServlet(new ServletHolder(new MovieService()), "/getmovie");
        context.addServlet(new ServletHolder(new UserService()), "/getuser");
        context.addServlet(new ServletHolder(new SimilarMovieService()), "/getsimilarmovie");
        context.addServlet(new ServletHolder(new RecommendationService()), "/getrecommendation");
        context.addServlet(new ServletHolder(new RerankServlet(new RecForYouService(), store, models, misses, config,
                System::currentTimeMillis)), "/getrecforyou");

        ServletHolder page = new ServletHolder("sparrow-llm-page", DefaultServlet.class);
        page.setInitParameter("resourceBase", pageResources());
        page.setInitParameter("pathInfoOnly", "true");
        page.setInitParameter("dirAllowed", "false");
        context.addServlet(page, "/sparrow-llm/*");
        context.addServlet(new ServletHolder(new CompareServlet(store, models, config, System::currentTimeMillis)),
                "/sparrow-llm/api/compare");

        Server server = new Server(new InetSocketAddress("0.0.0.0", config.httpPort()));
        server.setHandler(context);
        return server;
    }

    /** The port Jetty listens on (the real one when PORT is 0). */
    static int httpPort(Server server) {
        return ((ServerConnector) server.getConnectors()[0]).getLocalPort();
    }

    /** The folder of the comparison page inside the bridge jar (or target/classes). */
    private static String pageResources() throws IOException {
        URL page = BridgeLauncher.class.getResource("/sparrow-llm-web/compare.html");
        if (page == null) {
            throw new IOException("the comparison page is missing from the classpath (sparrow-llm-web/compare.html)");
        }
        return new URL(page, ".").toExternalForm();
    }

    private static String file(Path webRoot, String relative) {
        return webRoot.resolve(relative).toString();
    }
}
