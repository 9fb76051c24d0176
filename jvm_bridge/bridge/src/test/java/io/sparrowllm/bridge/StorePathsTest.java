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
 * The launcher never serves the store, even one configured inside the web root, nor the old
 * default folder {@code /modeldata/sparrow-llm/}: 404, no listing, no link followed; the host's
 * own files are served as before.
 */
public class StorePathsTest {
    /** Every stored file holds this; no answer may. */
    private static final String MARK = "store-content-mark";
    /** The title of Jetty's directory listing. */
    private static final String LISTING = "Directory: ";
    private static WebClient.Running bridge;
    private static Path webRoot;

    @BeforeClass
    public static void start() throws Exception {
        webRoot = Fixture.loadedWebRoot();
        Path store = webRoot.resolve("data/store");
        Path legacy = webRoot.resolve("modeldata/sparrow-llm");
        Path outside = Fixture.tempDir("outside");
        for (Path dir : new Path[]{store, legacy}) {
            Fixture.writeFile(dir.resolve("records/recent/1.json"), Fixture.recordJson("recent", 1, 1L, 1).replace("because", MARK));
            Fixture.writeFile(dir.resolve("profiles/1.json"), "{\"text\": \"" + MARK + "\"}");
        }
        Fixture.writeFile(outside.resolve("secret.txt"), MARK);
        Fixture.writeFile(webRoot.resolve("data/public.txt"), "public");
        Files.createSymbolicLink(store.resolve("records/recent/leak.txt"), outside.resolve("secret.txt"));
        Files.createSymbolicLink(store.resolve("out"), outside);
        Files.createSymbolicLink(webRoot.resolve("shortcut"), store);
        bridge = WebClient.bridge(Fixture.config(store));
    }

    @AfterClass
    public static void stop() throws Exception {
        WebClient.close(bridge);
    }

    @Test
    public void storeFilesUnderTheWebRootAre404() throws Exception {
        assertHidden("/data/store/records/recent/1.json");
        assertHidden("/data/store/profiles/1.json");
    }

    @Test
    public void storeFoldersHaveNoListing() throws Exception {
        assertHidden("/data/store/");
        assertHidden("/data/store");
        assertHidden("/data/store/records/");
        assertHidden("/data/store/records/recent/");
    }

    @Test
    public void oldDefaultStorePathIs404() throws Exception {
        assertHidden("/modeldata/sparrow-llm/records/recent/1.json");
        assertHidden("/modeldata/sparrow-llm/profiles/1.json");
        assertHidden("/modeldata/sparrow-llm/");
        assertHidden("/modeldata/sparrow-llm");
        assertHidden("/modeldata/sparrow-llm/records/");
        assertHidden("/modeldata/sparrow-llm/nothing-here.json");
    }

    @Test
    public void symlinkInsideTheStoreIsNotFollowedOutOfIt() throws Exception {
        assertHidden("/data/store/records/recent/leak.txt");
        assertHidden("/data/store/out/secret.txt");
        assertHidden("/data/store/out/");
    }

    @Test
    public void linkFromTheWebRootIntoTheStoreDoesNotOpenIt() throws Exception {
        assertHidden("/shortcut/records/recent/1.json");
        assertHidden("/shortcut/");
        assertHidden("/shortcut/out/secret.txt");
    }

    @Test
    public void dottedAndEncodedPathsDoNotReachTheStore() throws Exception {
        String[] paths = {
                "/data/./store/records/recent/1.json", "/data//store/records/recent/1.json",
                "/data/x/../store/records/recent/1.json", "/data/store/%72ecords/recent/1.json",
                "/data/%73tore/records/recent/1.json", "/modeldata/%73parrow-llm/records/recent/1.json",
                "/modeldata/./sparrow-llm/", "/modeldata//sparrow-llm/records/recent/1.json",
                "/data/store/records/recent/1.json;x=1", "/data/store/records/recent/1.json%00",
                "/data/store%2Frecords%2Frecent%2F1.json", "/modeldata%2Fsparrow-llm%2F",
        };
        for (String path : paths) {
            WebClient.Reply reply = bridge.get(path);
            assertTrue(path + ": " + reply.status, reply.status == 404 || reply.status == 400);
            assertFalse(path, reply.body.contains(MARK) || reply.body.contains(LISTING));
        }
    }

    @Test
    public void headAndOtherMethodsOnTheStoreAre404() throws Exception {
        assertEquals(404, bridge.request("HEAD", "/data/store/records/recent/1.json").status);
        assertEquals(404, bridge.request("HEAD", "/modeldata/sparrow-llm/records/recent/1.json").status);
        WebClient.Reply post = bridge.request("POST", "/data/store/records/recent/1.json");
        assertFalse(post.body.contains(MARK));
        assertTrue(String.valueOf(post.status), post.status == 404 || post.status == 405);
    }

    @Test
    public void theHostsOwnFilesAndListingsAreServedAsBefore() throws Exception {
        assertEquals(200, bridge.get("/index.html").status);
        assertEquals(200, bridge.get("/data/public.txt").status);
        WebClient.Reply listing = bridge.get("/data/");
        assertEquals("the host lists folders (Jetty's default), the store is only a name there", 200, listing.status);
        assertTrue(listing.body, listing.body.contains(LISTING) && listing.body.contains("public.txt"));
        assertFalse(listing.body.contains(MARK));
        assertEquals(200, bridge.get("/modeldata/").status);
        assertEquals("the store page still works", 200, bridge.get("/sparrow-llm/compare.html").status);
    }

    @Test
    public void theHiddenCheckCoversEveryWayIn() {
        HostStaticServlet servlet = new HostStaticServlet(webRoot, webRoot.resolve("data/store"), webRoot.resolve("modeldata/sparrow-llm"));
        assertTrue(servlet.isHidden("/data/store"));
        assertTrue(servlet.isHidden("/data/store/records/recent/1.json"));
        assertTrue(servlet.isHidden("/data/store/not-there/at-all"));
        assertTrue(servlet.isHidden("/modeldata/sparrow-llm/not-there"));
        assertTrue(servlet.isHidden("/shortcut/records"));
        assertTrue("outside the web root", servlet.isHidden("/../etc/passwd"));
        assertTrue("not a path", servlet.isHidden("/data/a\u0000b"));
        assertFalse(servlet.isHidden("/"));
        assertFalse(servlet.isHidden("/data/"));
        assertFalse(servlet.isHidden("/data/store-not"));
        assertFalse(servlet.isHidden("/modeldata/item2vecEmb.csv"));
    }

    @Test
    public void warnsAboutTheOldDefaultFolderOnlyWhenItIsNotTheStore() throws Exception {
        Path legacy = webRoot.resolve("modeldata/sparrow-llm");
        try (LogCapture log = new LogCapture()) {
            assertTrue(BridgeLauncher.warnAboutLegacyStore(Fixture.config(Fixture.tempDir("store"))));
            log.assertOneLine("found store records at the old default folder " + legacy, "any sparrow-llm command moves them");
        }
        try (LogCapture log = new LogCapture()) {
            assertFalse("the store is configured there", BridgeLauncher.warnAboutLegacyStore(Fixture.config(legacy)));
            assertEquals("", log.text());
        }
        assertTrue("nothing was moved", Files.isRegularFile(legacy.resolve("records/recent/1.json")));
    }

    private static void assertHidden(String path) throws Exception {
        WebClient.Reply reply = bridge.get(path);
        assertEquals(path, 404, reply.status);
        assertFalse(path + " shows stored content: " + reply.body, reply.body.contains(MARK));
        assertFalse(path + " lists the store: " + reply.body, reply.body.contains(LISTING));
    }
}
