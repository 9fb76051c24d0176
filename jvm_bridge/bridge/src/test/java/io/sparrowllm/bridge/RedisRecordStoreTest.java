package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.Transaction;

import java.util.Collections;
import java.util.concurrent.TimeUnit;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

/** The Redis store against a real redis-server started here (password and db set, nothing saved). */
public class RedisRecordStoreTest {
    private static final int DB = 2;
    private static RedisServer redis;

    @BeforeClass
    public static void startRedis() throws Exception {
        redis = RedisServer.start();
    }

    @AfterClass
    public static void stopRedis() throws Exception {
        if (redis != null) {
            redis.close();
        }
    }

    static RedisRecordStore store(int port, String password, int db) {
        return new RedisRecordStore("127.0.0.1", port, password, db, 300, BridgeConfig.DEFAULT_MAX_RECORD_BYTES);
    }

    @Test
    public void readsWhatThePythonSideWrites() throws Exception {
        try (Jedis jedis = redis.client(DB); RedisRecordStore store = store(redis.port(), RedisServer.PASSWORD, DB)) {
            Transaction write = jedis.multi();
            write.set("sllm:rec:recent:1", Fixture.recordJson("recent", 1, 5L, 858, 1));
            write.sadd("sllm:models", "recent");
            write.exec();
            jedis.set("sllm:profile:1", "{\"text\": \"space operas\"}");

            StoredRecord record = store.read("recent", 1);
            assertEquals(5L, record.createdAt);
            assertEquals(858, record.items.get(0).movieId);
            assertNull(store.read("recent", 2));
            assertNull(store.read("Bad Name", 1));
            assertEquals(Collections.singletonList("recent"), store.models());
            JsonNode profile = store.readProfile(1);
            assertEquals("space operas", profile.get("text").asText());
            assertNull(store.readProfile(2));

            jedis.set("sllm:rec:recent:3", "{\"model\": \"rec");
            try {
                store.read("recent", 3);
                fail("read a truncated record");
            } catch (StoreException e) {
                assertTrue(e.getMessage(), e.getMessage().startsWith("redis sllm:rec:recent:3: not valid JSON"));
                assertEquals("record invalid", e.publicMessage());
            }
        }
    }

    @Test
    public void failsFastWithAClearMessageWhenRedisIsDown() throws Exception {
        try (RedisRecordStore store = store(RedisServer.freePort(), null, 0)) {
            long start = System.nanoTime();
            try {
                store.read("recent", 1);
                fail("read from a closed port");
            } catch (StoreException e) {
                assertTrue(e.getMessage(), e.getMessage().startsWith("redis GET sllm:rec:recent:1 failed"));
                assertEquals("store unreachable", e.publicMessage());
            }
            assertTrue("no long wait", System.nanoTime() - start < TimeUnit.SECONDS.toNanos(3));
        }
    }

    @Test
    public void refusesAWrongPassword() {
        try (RedisRecordStore store = store(redis.port(), "wrong", DB)) {
            store.models();
            fail("authenticated with a wrong password");
        } catch (StoreException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith("redis SMEMBERS sllm:models failed"));
        }
    }
}
