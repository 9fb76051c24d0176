package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.After;
import org.junit.AfterClass;
import org.junit.Before;
import org.junit.BeforeClass;
import org.junit.Test;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.Transaction;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

/**
 * The stage on the Redis store while Redis is killed, paused (SIGSTOP) and restarted, and with
 * hostile values: every fault gives every plugin model the host's emb order with the
 * host-fallback header, fast, and the stage recovers by itself.
 */
public class RedisFaultTest {
    private static final int DB = 3;
    private static final int SIZE = 12;
    private static final int TIMEOUT_MS = 200;
    /** A fault answer takes about one timeout; this is the most any may take. */
    private static final long MAX_FAULT_MS = 1500;
    private static final List<String> OWNED = owned();
    private static List<String> owned() {
        List<String> models = new ArrayList<>(BridgeConfig.BUILT_IN_MODELS);
        models.add("custom");
        return models;
    }

    private static RedisServer redis;
    private static WebClient.Running host;
    private static WebClient.Running bridge;
    private static ExecutorService parallel;

    @BeforeClass
    public static void start() throws Exception {
        redis = RedisServer.start();
        writeRecords();
        host = WebClient.host();
        bridge = WebClient.bridge(redisConfig());
        parallel = Executors.newFixedThreadPool(8);
    }

    @AfterClass
    public static void stop() throws Exception {
        if (parallel != null) {
            parallel.shutdownNow();
        }
        WebClient.close(bridge, host, redis);
    }

    /** Each case starts with Redis up, holding the records, and the stage serving them. */
    @Before
    public void storeServes() throws Exception {
        assertStored(bridge);
    }

    /** A case that broke Redis leaves it running again with the records. */
    @After
    public void repair() throws Exception {
        redis.resume();
        try (Jedis jedis = redis.client(DB)) {
            jedis.ping();
        } catch (RuntimeException down) {
            redis.restart();
            writeRecords();
        }
        writeRecords();
    }

    @Test
    public void redisKilledGivesEveryPluginModelTheHostFallbackFast() throws Exception {
        redis.kill();
        for (String model : OWNED) {
            try (LogCapture log = new LogCapture()) {
                assertFastFallback(bridge, model);
                log.assertOneLineBesidesTheModelIndex("cannot use the " + model + " record of user 1 (store unreachable)");
            }
        }
    }

    @Test
    public void redisPausedAnswersWithinTheTimeoutThenRecovers() throws Exception {
        warmPool();
        redis.pause();
        try (LogCapture log = new LogCapture()) {
            for (String model : Arrays.asList("recent", "custom", "llm")) {
                assertFastFallback(bridge, model);
            }
            log.assertNoStackTrace();
        }
        redis.resume();
        assertEveryRequestStored();
    }

    @Test
    public void redisRestartedPooledConnectionsRecoverForEveryRequest() throws Exception {
        warmPool();
        redis.restart();
        writeRecords();
        try (LogCapture log = new LogCapture()) {
            assertEveryRequestStored();
            assertEquals("no request failed after the restart: " + log.text(), "", log.text());
        }
    }

    @Test
    public void storeDownWithModelsUnsetRecentGetsTheEmbOrderAndOurHeader() throws Exception {
        redis.kill();
        assertFastFallback(bridge, "recent");
    }

    @Test
    public void storeDownWithModelsSetRecentGetsTheEmbOrderAndOurHeader() throws Exception {
        try (WebClient.Running listed = WebClient.bridge(redisConfig("SPARROW_LLM_MODELS", "other"))) {
            assertEquals("recent; source=store", listed.get("/getrecforyou?id=1&size=3&model=recent").pluginHeader);
            redis.kill();
            assertFastFallback(listed, "recent");
            assertFastFallback(listed, "other");
            assertFastFallback(listed, "custom");
        }
    }

    @Test
    public void storeDownFromTheStartTheBuiltInModelsStillFallBackWithOurHeader() throws Exception {
        redis.kill();
        try (LogCapture log = new LogCapture();
             WebClient.Running late = WebClient.bridge(redisConfig())) {
            for (String model : BridgeConfig.BUILT_IN_MODELS) {
                assertFastFallback(late, model);
            }
            log.assertNoStackTrace();
            WebClient.Reply unknown = late.get("/getrecforyou?id=1&size=5&model=xyz");
            assertEquals("a model never seen stays the host's", null, unknown.pluginHeader);
        }
    }

    @Test
    public void storeDownTheLastKnownStoreModelStaysOwned() throws Exception {
        redis.kill();
        try (LogCapture log = new LogCapture()) {
            assertFastFallback(bridge, "custom");
            log.assertNoStackTrace();
        }
    }

    @Test
    public void storeDownTheComparePageSaysStoreUnreachableAndNothingMore() throws Exception {
        redis.kill();
        WebClient.Reply reply = bridge.get("/sparrow-llm/api/compare?id=1&size=5");
        assertEquals(200, reply.status);
        JsonNode answer = Json.MAPPER.readTree(reply.body);
        assertEquals(5, answer.get("host").get("movies").size());
        assertEquals(OWNED.size(), answer.get("models").size());
        for (JsonNode model : answer.get("models")) {
            assertEquals(model.toString(), "store unreachable", model.get("error").asText());
            assertEquals(2, model.size());
        }
        assertFalse(reply.body.contains(String.valueOf(redis.port())) || reply.body.contains("127.0.0.1"));
        assertTrue(answer.get("profile").isNull());
    }

    @Test
    public void redisRecordLargerThanTheLimitFallsBack() throws Exception {
        StringBuilder big = new StringBuilder(Fixture.recordJson("recent", 2, now(), 1, 2));
        big.setLength(big.length() - 1);
        big.append(",\"pad\":\"");
        while (big.length() <= BridgeConfig.DEFAULT_MAX_RECORD_BYTES) {
            big.append("xxxxxxxxxxxxxxxx");
        }
        big.append("\"}");
        assertHostileValue(2, big.toString(), "larger than 1048576 bytes");
    }

    @Test
    public void redisRecordNested200kDeepFallsBack() throws Exception {
        assertHostileValue(3, Fixture.deepJson(200_000, false), "nested deeper than 64 levels");
    }

    @Test
    public void redisRecordOfTheWrongRedisTypeFallsBack() throws Exception {
        try (Jedis jedis = redis.client(DB)) {
            jedis.del("sllm:rec:recent:4");
            jedis.hset("sllm:rec:recent:4", "model", "recent");
        }
        try (LogCapture log = new LogCapture()) {
            WebClient.assertHostFallback(bridge, host, "recent", 4, SIZE);
            log.assertOneLine("(record invalid)", "WRONGTYPE");
        }
    }

    @Test
    public void redisRecordCreatedInTheFutureFallsBack() throws Exception {
        assertHostileValue(5, Fixture.recordJson("recent", 5, now() + 3600_000L, 1, 2), "ahead of this machine's clock");
    }

    @Test
    public void redisRecordTruncatedFallsBack() throws Exception {
        assertHostileValue(6, Fixture.recordJson("recent", 6, now(), 1, 2).substring(0, 30), "not valid JSON at line 1");
    }

    private static void assertHostileValue(int userId, String value, String detail) throws Exception {
        try (Jedis jedis = redis.client(DB)) {
            jedis.set("sllm:rec:recent:" + userId, value);
        }
        try (LogCapture log = new LogCapture()) {
            WebClient.assertHostFallback(bridge, host, "recent", userId, SIZE);
            log.assertOneLine("cannot use the recent record of user " + userId, detail);
        }
    }

    /** Sequential and parallel requests, the first one right away: every one is served from the store. */
    private static void assertEveryRequestStored() throws Exception {
        for (int i = 0; i < 10; i++) {
            assertStored(bridge);
        }
        List<Future<?>> answers = new ArrayList<>();
        for (int i = 0; i < 24; i++) {
            answers.add(parallel.submit(() -> {
                assertStored(bridge);
                return null;
            }));
        }
        for (Future<?> answer : answers) {
            answer.get(30, TimeUnit.SECONDS);
        }
    }

    /** Several pooled connections, each used once. */
    private static void warmPool() throws Exception {
        List<Future<?>> answers = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            answers.add(parallel.submit(() -> bridge.get("/getrecforyou?id=1&size=3&model=recent")));
        }
        for (Future<?> answer : answers) {
            answer.get(30, TimeUnit.SECONDS);
        }
    }

    private static void assertStored(WebClient.Running stage) throws Exception {
        WebClient.Reply reply = stage.get("/getrecforyou?id=1&size=3&model=recent");
        assertEquals("recent; source=store", reply.pluginHeader);
        assertEquals(Arrays.asList(260, 296), RerankServletTest.ids(reply.body).subList(0, 2));
    }

    private static void assertFastFallback(WebClient.Running stage, String model) throws Exception {
        long start = System.nanoTime();
        WebClient.assertHostFallback(stage, host, model, 1, SIZE);
        long ms = (System.nanoTime() - start) / 1_000_000;
        assertTrue(model + " took " + ms + " ms", ms < MAX_FAULT_MS);
    }

    private static void writeRecords() {
        try (Jedis jedis = redis.client(DB)) {
            Transaction write = jedis.multi();
            write.set("sllm:rec:recent:1", Fixture.recordJson("recent", 1, now(), 260, 296));
            write.set("sllm:rec:custom:1", Fixture.recordJson("custom", 1, now(), 296, 260));
            write.sadd("sllm:models", "recent", "custom");
            write.exec();
        }
    }

    private static BridgeConfig redisConfig(String... more) {
        List<String> env = new ArrayList<>(Arrays.asList("SPARROW_LLM_STORE", "redis",
                "SPARROW_LLM_REDIS_PORT", String.valueOf(redis.port()), "SPARROW_LLM_REDIS_PASSWORD", RedisServer.PASSWORD,
                "SPARROW_LLM_REDIS_DB", String.valueOf(DB), "SPARROW_LLM_REDIS_TIMEOUT_MS", String.valueOf(TIMEOUT_MS)));
        env.addAll(Arrays.asList(more));
        return Fixture.config(Fixture.tempDir("store"), env.toArray(new String[0]));
    }

    private static long now() {
        return System.currentTimeMillis();
    }
}
