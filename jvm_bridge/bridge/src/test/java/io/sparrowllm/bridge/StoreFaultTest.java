package io.sparrowllm.bridge;

import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

/**
 * The file store's faults and hostile records, over real HTTP: each case gets the host's emb order,
 * byte for byte, with {@code X-Sparrow-LLM: <model>; source=host-fallback}, and logs one line and
 * no stack trace. Each record fault uses its own user so the cases do not disturb each other.
 */
public class StoreFaultTest {
    private static final int SIZE = 12;
    private static final long HOUR_MS = 3600_000L;
    /** Every model the stage owns in {@link #bridge}: the built-in list, the listed one and one only the store names. */
    private static final List<String> OWNED = Arrays.asList("recent", "llm", "clickprompt", "popularity", "ease", "sasrec",
            "listed", "custom");
    private static WebClient.Running host;
    private static WebClient.Running bridge;
    private static Path store;
    private static Path outside;

    @BeforeClass
    public static void start() throws Exception {
        store = Fixture.tempDir("store");
        outside = Fixture.tempDir("outside");
        Fixture.writeRecord(store, "recent", 1, now(), 260, 858, 296);
        Fixture.writeRecord(store, "custom", 1, now(), 296, 260);
        host = WebClient.host();
        bridge = WebClient.bridge(Fixture.config(store, "SPARROW_LLM_MODELS", "listed"));
    }

    @AfterClass
    public static void stop() throws Exception {
        WebClient.close(bridge, host);
    }

    @Test
    public void aGoodRecordIsServedFromTheStore() throws Exception {
        WebClient.Reply reply = bridge.get("/getrecforyou?id=1&size=3&model=recent");
        assertEquals("recent; source=store", reply.pluginHeader);
        assertEquals(Arrays.asList(260, 296), RerankServletTest.ids(reply.body).subList(0, 2));
        assertEquals("custom; source=store", bridge.get("/getrecforyou?id=1&size=3&model=custom").pluginHeader);
    }

    @Test
    public void recordThatIsAFifoFallsBackWithoutBlocking() throws Exception {
        Fixture.mkfifo(record("recent", 2));
        long start = System.nanoTime();
        assertFallback("recent", 2, "not a regular file");
        assertTrue("no wait on the pipe", System.nanoTime() - start < 2_000_000_000L);
    }

    @Test
    public void recordThatIsASymlinkOutOfTheStoreRootIsNotFollowed() throws Exception {
        Path secret = outside.resolve("3.json");
        Fixture.writeFile(secret, Fixture.recordJson("recent", 3, now(), 1, 2, 3));
        link(record("recent", 3), secret);
        assertFallback("recent", 3, "symbolic link (not followed)");
    }

    @Test
    public void recordThatIsASymlinkInsideTheStoreIsNotFollowedEither() throws Exception {
        Fixture.writeRecord(store, "recent", 4, now(), 1, 2, 3);
        Files.move(record("recent", 4), store.resolve("records/recent/4.real"));
        link(record("recent", 4), store.resolve("records/recent/4.real"));
        assertFallback("recent", 4, "symbolic link (not followed)");
    }

    @Test
    public void modelFolderThatIsASymlinkOutOfTheStoreRootIsNotFollowed() throws Exception {
        Path folder = outside.resolve("listed");
        Fixture.writeFile(folder.resolve("5.json"), Fixture.recordJson("listed", 5, now(), 1, 2, 3));
        link(store.resolve("records/listed"), folder);
        assertFallback("listed", 5, "not a folder but a symbolic link (not followed)");
    }

    @Test
    public void recordThatIsAFolderFallsBack() throws Exception {
        Files.createDirectories(record("recent", 6));
        assertFallback("recent", 6, "not a regular file");
    }

    @Test
    public void recordNested200kArraysDeepFallsBackWithoutStackOverflow() throws Exception {
        String json = Fixture.recordJson("recent", 7, now(), 1, 2).replace("{\"parsed\":true}", Fixture.deepJson(200_000, false));
        write(record("recent", 7), json);
        assertFallback("recent", 7, "nested deeper than 64 levels");
    }

    @Test
    public void recordNested200kObjectsDeepFallsBackWithoutStackOverflow() throws Exception {
        write(record("recent", 8), Fixture.deepJson(200_000, true));
        assertFallback("recent", 8, "nested deeper than 64 levels");
    }

    @Test
    public void recordLargerThanTheLimitFallsBack() throws Exception {
        StringBuilder padding = new StringBuilder(BridgeConfig.DEFAULT_MAX_RECORD_BYTES);
        while (padding.length() < BridgeConfig.DEFAULT_MAX_RECORD_BYTES) {
            padding.append("padding ");
        }
        write(record("recent", 9), Fixture.recordJson("recent", 9, now(), 1, 2).replace("because 0", padding.toString()));
        assertFallback("recent", 9, "larger than 1048576 bytes");
    }

    @Test
    public void recordCreatedInTheFutureFallsBack() throws Exception {
        Fixture.writeRecord(store, "recent", 10, now() + HOUR_MS, 1, 2, 3);
        assertFallback("recent", 10, "ahead of this machine's clock");
    }

    @Test
    public void recordSlightlyAheadWithinTheClockSkewIsServed() throws Exception {
        Fixture.writeRecord(store, "recent", 11, now() + 60_000L, 296, 260);
        WebClient.Reply reply = bridge.get("/getrecforyou?id=11&size=3&model=recent");
        assertEquals("recent; source=store", reply.pluginHeader);
        assertEquals(Arrays.asList(296, 260), RerankServletTest.ids(reply.body).subList(0, 2));
    }

    @Test
    public void truncatedJsonFallsBack() throws Exception {
        String json = Fixture.recordJson("recent", 12, now(), 1, 2, 3);
        write(record("recent", 12), json.substring(0, json.length() - 20));
        assertFallback("recent", 12, "not valid JSON at line 1, column");
    }

    @Test
    public void emptyRecordFallsBack() throws Exception {
        write(record("recent", 13), "");
        assertFallback("recent", 13, "not a JSON object");
    }

    @Test
    public void binaryGarbageFallsBack() throws Exception {
        byte[] garbage = new byte[4096];
        for (int i = 0; i < garbage.length; i++) {
            garbage[i] = (byte) (i * 31 + 7);
        }
        Files.createDirectories(record("recent", 14).getParent());
        Files.write(record("recent", 14), garbage);
        assertFallback("recent", 14, "not valid JSON");
    }

    @Test
    public void trailingContentAfterTheRecordFallsBack() throws Exception {
        write(record("recent", 15), Fixture.recordJson("recent", 15, now(), 1, 2) + " {\"more\": 1}");
        assertFallback("recent", 15, "more than one JSON value");
    }

    @Test
    public void movieIdOfTheWrongTypeFallsBack() throws Exception {
        write(record("recent", 16), Fixture.recordJson("recent", 16, now(), 1, 2).replace("\"movieId\":1", "\"movieId\":\"one\""));
        assertFallback("recent", 16, "'movieId' must be an integer");
    }

    @Test
    public void itemsOfTheWrongTypeFallBack() throws Exception {
        write(record("recent", 17), Fixture.recordJson("recent", 17, now(), 1).replaceAll("\"items\":\\[.*\\]", "\"items\":{\"a\":1}"));
        assertFallback("recent", 17, "'items' must be an array");
        write(record("recent", 18), Fixture.recordJson("recent", 18, now()).replace("\"items\":[]", "\"items\":[1,2]"));
        assertFallback("recent", 18, "every item must be an object");
    }

    @Test
    public void createdAtOfTheWrongTypeFallsBack() throws Exception {
        long createdAt = now();
        write(record("recent", 19), Fixture.recordJson("recent", 19, createdAt, 1)
                .replace("\"createdAt\":" + createdAt, "\"createdAt\":\"today\""));
        assertFallback("recent", 19, "'createdAt' must be epoch milliseconds");
    }

    @Test
    public void numberThousandsOfDigitsLongFallsBack() throws Exception {
        long createdAt = now();
        StringBuilder digits = new StringBuilder("1");
        for (int i = 0; i < 5000; i++) {
            digits.append('0');
        }
        write(record("recent", 20), Fixture.recordJson("recent", 20, createdAt, 1)
                .replace("\"createdAt\":" + createdAt, "\"createdAt\":" + digits));
        assertFallback("recent", 20, "a number longer than 64 characters");
    }

    @Test
    public void recordOfAnotherUserFallsBack() throws Exception {
        write(record("recent", 21), Fixture.recordJson("recent", 1, now(), 1, 2));
        assertFallback("recent", 21, "holds the record of model 'recent' for user 1");
    }

    @Test
    public void recordsFolderMissingGivesEveryPluginModelTheHostFallback() throws Exception {
        Path dir = Fixture.tempDir("store");
        Fixture.writeRecord(dir, "custom", 1, now(), 296, 260);
        try (WebClient.Running broken = WebClient.bridge(Fixture.config(dir, "SPARROW_LLM_MODELS", "listed"))) {
            assertEquals("custom; source=store", broken.get("/getrecforyou?id=1&size=3&model=custom").pluginHeader);
            Files.move(dir.resolve("records"), dir.resolve("records.gone"));
            try (LogCapture log = new LogCapture()) {
                for (String model : OWNED) {
                    WebClient.assertHostFallback(broken, host, model, 1, SIZE);
                }
                log.assertNoStackTrace();
            }
        }
    }

    @Test
    public void recordsFolderReplacedByAFileGivesEveryPluginModelTheHostFallback() throws Exception {
        assertEveryModelFallsBackWhen(dir -> {
            Files.move(dir.resolve("records"), dir.resolve("records.gone"));
            Files.write(dir.resolve("records"), "not a folder".getBytes(StandardCharsets.UTF_8));
        }, "records: not a folder");
    }

    @Test
    public void recordsFolderThatIsASymlinkOutOfTheStoreRootIsNotFollowed() throws Exception {
        assertEveryModelFallsBackWhen(dir -> {
            Path elsewhere = Fixture.tempDir("elsewhere");
            Files.move(dir.resolve("records"), elsewhere.resolve("records"));
            link(dir.resolve("records"), elsewhere.resolve("records"));
        }, "records: not a folder but a symbolic link (not followed)");
    }

    @Test
    public void storeRootReplacedByAFileGivesEveryPluginModelTheHostFallback() throws Exception {
        Path parent = Fixture.tempDir("root");
        Path dir = parent.resolve("store");
        Fixture.writeRecord(dir, "custom", 1, now(), 296, 260);
        try (WebClient.Running broken = WebClient.bridge(Fixture.config(dir, "SPARROW_LLM_MODELS", "listed"))) {
            Files.move(dir, parent.resolve("store.gone"));
            Files.write(dir, "not a folder".getBytes(StandardCharsets.UTF_8));
            for (String model : OWNED) {
                try (LogCapture log = new LogCapture()) {
                    WebClient.assertHostFallback(broken, host, model, 1, SIZE);
                    assertLogged(log, model, "record unreadable");
                }
            }
        }
    }

    /** A fault of the whole store (done by {@code breakIt} after a first good answer): every owned model falls back. */
    private static void assertEveryModelFallsBackWhen(StoreBreaker breakIt, String detail) throws Exception {
        Path dir = Fixture.tempDir("store");
        Fixture.writeRecord(dir, "custom", 1, now(), 296, 260);
        Fixture.writeRecord(dir, "recent", 1, now(), 296, 260);
        try (WebClient.Running broken = WebClient.bridge(Fixture.config(dir, "SPARROW_LLM_MODELS", "listed"))) {
            assertEquals("custom; source=store", broken.get("/getrecforyou?id=1&size=3&model=custom").pluginHeader);
            breakIt.breakStore(dir);
            for (String model : OWNED) {
                try (LogCapture log = new LogCapture()) {
                    WebClient.assertHostFallback(broken, host, model, 1, SIZE);
                    assertLogged(log, model, detail);
                }
            }
        }
    }

    /** The fault's line (and, for a model only the store names, at most the one line that the index is unreadable). */
    private static void assertLogged(LogCapture log, String model, String detail) {
        log.assertOneLineBesidesTheModelIndex("the " + model + " record of user 1", detail);
    }

    private interface StoreBreaker {
        void breakStore(Path dir) throws Exception;
    }

    /** The model's request for the user falls back, with one log line naming the record and the fault. */
    private static void assertFallback(String model, int userId, String detail) throws Exception {
        try (LogCapture log = new LogCapture()) {
            WebClient.assertHostFallback(bridge, host, model, userId, SIZE);
            log.assertOneLine("cannot use the " + model + " record of user " + userId, detail);
        }
        try (LogCapture log = new LogCapture()) {
            WebClient.assertHostFallback(bridge, host, model, userId, SIZE);
            log.assertOneLine("cannot use the " + model + " record of user " + userId, detail);
        }
        assertTrue("a fault is not a miss", bridge.misses.take(100).isEmpty());
    }

    private static Path record(String model, int userId) {
        return store.resolve("records").resolve(model).resolve(userId + ".json");
    }

    private static void write(Path file, String content) {
        Fixture.writeFile(file, content);
    }

    private static void link(Path link, Path target) throws Exception {
        Files.createDirectories(link.getParent());
        Files.createSymbolicLink(link, target);
    }

    private static long now() {
        return System.currentTimeMillis();
    }
}
