package io.sparrowllm.bridge;

import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

/**
 * Nothing private over HTTP (issue 18, case 1): the plugin's home (its private folder holds the connect
 * file with the live gateway token, and the host's log) and a connect file kept elsewhere are never
 * served, not even through a link in the web root; the web root a home holds is still served.
 */
public class HostStaticServletTest {
    private static final String TOKEN_MARK = "live-gateway-token-mark";
    private static final String LOG_MARK = "host-log-mark";
    private static final String LISTING = "Directory: ";
    private static WebClient.Running bridge;
    private static Path webRoot;
    private static Path home;
    private static Path elsewhere;

    @BeforeClass
    public static void start() throws Exception {
        webRoot = Fixture.loadedWebRoot();
        home = Fixture.tempDir("home");
        elsewhere = Fixture.tempDir("connect");
        Fixture.writeFile(home.resolve("private/gateway.json"), "{\"token\": \"" + TOKEN_MARK + "\"}");
        Fixture.writeFile(home.resolve("private/host.log"), LOG_MARK);
        Fixture.writeFile(elsewhere.resolve("gw.json"), "{\"token\": \"" + TOKEN_MARK + "\"}");
        Fixture.writeFile(elsewhere.resolve("readme.txt"), "beside the connect file");
        Files.createSymbolicLink(webRoot.resolve("home-link"), home);
        Files.createSymbolicLink(webRoot.resolve("private-link"), home.resolve("private"));
        Files.createSymbolicLink(webRoot.resolve("token-link.json"), home.resolve("private/gateway.json"));
        Files.createSymbolicLink(webRoot.resolve("gw-link.json"), elsewhere.resolve("gw.json"));
        Files.createSymbolicLink(webRoot.resolve("connect-folder-link"), elsewhere);
        bridge = WebClient.bridge(Fixture.config(Fixture.tempDir("store"), "SPARROW_LLM_HOME", home.toString(),
                "SPARROW_LLM_CONNECT_FILE", elsewhere.resolve("gw.json").toString()));
    }

    @AfterClass
    public static void stop() throws Exception {
        WebClient.close(bridge);
    }

    @Test
    public void aLinkToTheHomeServesNoListingNoConnectFileNoLog() throws Exception {
        for (String path : new String[]{"/home-link/", "/home-link", "/home-link/private/", "/home-link/private/gateway.json",
                "/home-link/private/host.log", "/private-link/gateway.json", "/private-link/", "/token-link.json",
                "/home-link/private/nothing-here", "/home-link/./private/gateway.json", "/home-link/%70rivate/host.log"}) {
            assertHidden(path);
        }
    }

    @Test
    public void aConnectFileKeptElsewhereIsNotServedThroughALink() throws Exception {
        assertHidden("/gw-link.json");
        assertHidden("/connect-folder-link/gw.json");
        assertEquals("only the file is hidden, not the folder beside it", 200,
                bridge.get("/connect-folder-link/readme.txt").status);
    }

    @Test
    public void theWebRootAHomeHoldsIsStillServed() throws Exception {
        // The stand-in's web root is composed under the home: everything in it is served, the rest of the home is not.
        Path holder = Fixture.classpathRoot();
        HostStaticServlet servlet = new HostStaticServlet(webRoot, holder);
        assertFalse(servlet.isHidden("/index.html"));
        assertFalse(servlet.isHidden("/sampledata/movies.csv"));
        assertFalse(servlet.isHidden("/"));
        Files.createDirectories(holder.resolve("private"));
        Path link = webRoot.resolve("holder-private-link");
        if (!Files.exists(link)) {
            Files.createSymbolicLink(link, holder.resolve("private"));
        }
        assertTrue("a link out of the web root back into the home", servlet.isHidden("/holder-private-link/gateway.json"));
        assertEquals(200, bridge.get("/index.html").status);
    }

    private static void assertHidden(String path) throws Exception {
        WebClient.Reply reply = bridge.get(path);
        assertEquals(path, 404, reply.status);
        assertFalse(path, reply.body.contains(TOKEN_MARK) || reply.body.contains(LOG_MARK) || reply.body.contains(LISTING));
        assertEquals(path, 404, bridge.request("HEAD", path).status);
    }
}
