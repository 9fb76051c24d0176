package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.zip.CRC32;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

/** The rerank stage over real HTTP, compared byte for byte with the host's own servlet. */
public class RerankServletTest {
    private static final long DAY_MS = 24L * 3600 * 1000;
    private static WebClient.Running host;
    private static WebClient.Running bridge;

    @BeforeClass
    public static void start() throws Exception {
        Path store = Fixture.tempDir("store");
        long now = System.currentTimeMillis();
        Fixture.writeRecord(store, "recent", 1, now, 260, 858, 296, 1, 260);
        Fixture.writeRecord(store, "recent", 2, now - 8 * DAY_MS, 260, 296);
        Fixture.writeRecord(store, "llm", 5, now, 2, 3);
        Fixture.writeFile(store.resolve("records/broken/1.json"), Fixture.recordJson("broken", 1, now, 2, 3).substring(0, 40));
        host = WebClient.host();
        bridge = WebClient.bridge(Fixture.config(store, "SPARROW_LLM_QUEUE_MAX", "3"));
    }

    @AfterClass
    public static void stop() throws Exception {
        WebClient.close(bridge, host);
    }

    @Test
    public void servesTheStoredOrderThenTheHostOrderInTheHostsJson() throws Exception {
        WebClient.Reply reply = bridge.get("/getrecforyou?id=1&size=10&model=recent");
        assertEquals(200, reply.status);
        assertEquals("recent; source=store", reply.pluginHeader);
        assertEquals(host.get("/getrecforyou?id=1&size=10&model=emb").contentType, reply.contentType);

        List<Integer> expected = new ArrayList<>(Arrays.asList(260, 296, 1));
        for (int id : ids(host.get("/getrecforyou?id=1&size=800&model=emb").body)) {
            if (expected.size() < 10 && !expected.contains(id)) {
                expected.add(id);
            }
        }
        assertEquals(expected, ids(reply.body));
        List<String> hostMovies = new ArrayList<>();
        for (int id : expected) {
            hostMovies.add(host.get("/getmovie?id=" + id).body.trim());
        }
        assertEquals("each movie exactly as the host writes it", "[" + String.join(",", hostMovies) + "]\n", reply.body);
    }

    @Test
    public void cutsTheStoredOrderToSize() throws Exception {
        assertEquals(Arrays.asList(260, 296), ids(bridge.get("/getrecforyou?id=1&size=2&model=recent").body));
        assertEquals("[]\n", bridge.get("/getrecforyou?id=1&size=0&model=recent").body);
    }

    @Test
    public void withoutAFreshReadableRecordServesTheHostRanking() throws Exception {
        String[][] cases = {
                {"/getrecforyou?id=3&size=12&model=recent", "no record"},
                {"/getrecforyou?id=2&size=12&model=recent", "stale record"},
                {"/getrecforyou?id=1&size=12&model=broken", "corrupt record"},
        };
        for (String[] c : cases) {
            WebClient.Reply reply = bridge.get(c[0]);
            String model = c[0].substring(c[0].lastIndexOf('=') + 1);
            WebClient.Reply hostRanking = host.get(c[0].replace("model=" + model, "model=emb"));
            assertEquals(c[1], 200, reply.status);
            assertEquals(c[1], hostRanking.body, reply.body);
            assertEquals(c[1], hostRanking.contentType, reply.contentType);
            assertEquals(c[1], model + "; source=host-fallback", reply.pluginHeader);
        }
    }

    @Test
    public void leavesEverythingElseToTheHost() throws Exception {
        String[] queries = {
                "id=abc&size=5&model=recent", "id=1&size=abc&model=recent", "id=1&size=-1&model=recent",
                "id=1&size=5", "id=&size=5&model=recent", "", "id=1&size=5&model=emb", "id=1&size=5&model=xyz",
                "id=1&size=5&model=nerualcf", "id=999999&size=5&model=recent", "id=999999&size=5&model=llm",
        };
        for (String query : queries) {
            WebClient.Reply expected = host.get("/getrecforyou?" + query);
            WebClient.Reply reply = bridge.get("/getrecforyou?" + query);
            assertEquals(query, expected.status, reply.status);
            assertEquals(query, expected.body, reply.body);
            assertEquals(query, expected.contentType, reply.contentType);
            assertNull(query, reply.pluginHeader);
        }
        assertEquals("an unknown user gets the host's empty list", "[]\n", bridge.get("/getrecforyou?id=999999&size=5&model=recent").body);
        assertEquals("bad input gets the host's empty answer", "\n", bridge.get("/getrecforyou?id=abc&size=5&model=recent").body);
    }

    @Test
    public void queuesNearlineMissesOnceAndBounded() throws Exception {
        bridge.misses.take(Integer.MAX_VALUE);
        for (int userId : new int[]{1, 1, 2, 5, 3, 4, 6}) {
            bridge.get("/getrecforyou?id=" + userId + "&size=3&model=llm");
        }
        bridge.get("/getrecforyou?id=3&size=3&model=recent");
        List<String> queued = bridge.misses.take(10).stream().map(m -> m.model + ":" + m.userId).collect(Collectors.toList());
        assertEquals("deduplicated, user 5 has a record, 'recent' is not nearline, bound 3",
                Arrays.asList("llm:1", "llm:2", "llm:3"), queued);
        assertEquals("llm; source=store", bridge.get("/getrecforyou?id=5&size=3&model=llm").pluginHeader);
    }

    @Test
    public void splitsTheDefaultModelByAStableUserBucket() throws Exception {
        try (WebClient.Running ab = WebClient.bridge(Fixture.config(Fixture.tempDir("store"),
                "SPARROW_LLM_AB_MODEL", "llm", "SPARROW_LLM_AB_PERCENT", "30"))) {
            int inShare = 0;
            int users = 0;
            for (int userId = 1; userId <= 200; userId++) {
                WebClient.Reply reply = ab.get("/getrecforyou?id=" + userId + "&size=4&model=emb");
                if (reply.body.equals("[]\n")) {
                    continue;
                }
                users++;
                boolean expectedInShare = bucket(userId) < 30;
                assertEquals("user " + userId, expectedInShare ? "llm; source=host-fallback" : null, reply.pluginHeader);
                assertEquals("no record: the host ranking either way",
                        host.get("/getrecforyou?id=" + userId + "&size=4&model=emb").body, reply.body);
                assertEquals("stable", reply.pluginHeader, ab.get("/getrecforyou?id=" + userId + "&size=4&model=emb").pluginHeader);
                inShare += expectedInShare ? 1 : 0;
            }
            double share = inShare / (double) users;
            assertTrue("share " + share, share > 0.2 && share < 0.4);
            assertNull("other models are not split", ab.get("/getrecforyou?id=1&size=4&model=xyz").pluginHeader);
            ab.misses.take(Integer.MAX_VALUE);
            assertEquals("a nearline model is ours before the worker wrote anything", "llm; source=host-fallback",
                    ab.get("/getrecforyou?id=1&size=4&model=llm").pluginHeader);
            assertEquals(1, ab.misses.take(10).size());
        }
    }

    /** The contract's bucket, computed here independently: floorMod(crc32(userId as text), 100). */
    private static long bucket(int userId) {
        CRC32 crc = new CRC32();
        crc.update(String.valueOf(userId).getBytes(StandardCharsets.UTF_8));
        return crc.getValue() % 100;
    }

    static List<Integer> ids(String body) throws Exception {
        List<Integer> ids = new ArrayList<>();
        for (JsonNode movie : Json.MAPPER.readTree(body)) {
            ids.add(movie.get("movieId").asInt());
        }
        return ids;
    }
}
