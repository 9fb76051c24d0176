package io.sparrowllm.bridge;

import com.sparrowrecsys.online.service.MovieService;
import com.sparrowrecsys.online.service.RecForYouService;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.InetSocketAddress;
import java.net.URL;
import java.nio.charset.StandardCharsets;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;

/** Real HTTP for the tests: the bridge's Jetty wiring, a bare host for reference, and a GET client. */
final class WebClient {
    private WebClient() {
    }

    /** One answer as a browser sees it. */
    static final class Reply {
        final int status;
        final String body;
        final String contentType;
        final String pluginHeader;

        Reply(int status, String body, String contentType, String pluginHeader) {
            this.status = status;
            this.body = body;
            this.contentType = contentType;
            this.pluginHeader = pluginHeader;
        }
    }

    /** A started Jetty; closing stops it. */
    /** Closes each resource that was opened, in order: an @AfterClass after a failed @BeforeClass sees nulls. */
    static void close(AutoCloseable... resources) throws Exception {
        for (AutoCloseable resource : resources) {
            if (resource != null) {
                resource.close();
            }
        }
    }

    static final class Running implements AutoCloseable {
        final Server server;
        final String base;
        final MissQueue misses;
        private final RecordStore store;

        Running(Server server, MissQueue misses, RecordStore store) throws Exception {
            this.server = server;
            this.misses = misses;
            this.store = store;
            server.start();
            this.base = "http://127.0.0.1:" + BridgeLauncher.httpPort(server);
        }

        Reply get(String pathAndQuery) throws IOException {
            return WebClient.get(base + pathAndQuery);
        }

        Reply request(String method, String pathAndQuery) throws IOException {
            return WebClient.request(method, base + pathAndQuery);
        }

        @Override
        public void close() throws Exception {
            server.stop();
            if (store != null) {
                store.close();
            }
        }
    }

    /** The launcher's server wiring on a free port, without the gateway. */
    static Running bridge(BridgeConfig config) throws Exception {
        MissQueue misses = new MissQueue(config.queueMax());
        RecordStore store = RecordStore.open(config);
        return new Running(BridgeLauncher.buildServer(config, Fixture.loadedWebRoot(), store, misses), misses, store);
    }

    /** The host's own services, unwrapped: what the bridge must reproduce. */
    static Running host() throws Exception {
        Fixture.loadedWebRoot();
        ServletContextHandler context = new ServletContextHandler();
        context.setContextPath("/");
        context.addServlet(new ServletHolder(new RecForYouService()), "/getrecforyou");
        context.addServlet(new ServletHolder(new MovieService()), "/getmovie");
        Server server = new Server(new InetSocketAddress("127.0.0.1", 0));
        server.setHandler(context);
        return new Running(server, null, null);
    }

    /**
     * The stage's answer for a plugin model without a usable record: the host's fallback ("emb")
     * order for the user, byte for byte, 200, the host's headers, plus ours.
     *
     * @return the reply
     */
    static Reply assertHostFallback(Running bridge, Running host, String model, int userId, int size) throws Exception {
        Reply reply = bridge.get("/getrecforyou?id=" + userId + "&size=" + size + "&model=" + model);
        Reply expected = host.get("/getrecforyou?id=" + userId + "&size=" + size + "&model=emb");
        assertEquals(model, 200, reply.status);
        assertEquals(model, model + "; source=host-fallback", reply.pluginHeader);
        assertEquals(model + ": the host's emb order", expected.body, reply.body);
        assertEquals(model, expected.contentType, reply.contentType);
        assertFalse("a known user's list is not empty", RerankServletTest.ids(reply.body).isEmpty());
        return reply;
    }

    static Reply get(String url) throws IOException {
        return request("GET", url);
    }

    static Reply request(String method, String url) throws IOException {
        HttpURLConnection connection = (HttpURLConnection) new URL(url).openConnection();
        connection.setRequestMethod(method);
        connection.setInstanceFollowRedirects(false);
        connection.setConnectTimeout(5000);
        connection.setReadTimeout(10000);
        int status = connection.getResponseCode();
        InputStream in = status < 400 ? connection.getInputStream() : connection.getErrorStream();
        ByteArrayOutputStream body = new ByteArrayOutputStream();
        if (in != null) {
            try (InputStream stream = in) {
                byte[] buffer = new byte[8192];
                for (int n; (n = stream.read(buffer)) > 0; ) {
                    body.write(buffer, 0, n);
                }
            }
        }
        return new Reply(status, new String(body.toByteArray(), StandardCharsets.UTF_8),
                connection.getContentType(), connection.getHeaderField(RerankServlet.HEADER));
    }
}
