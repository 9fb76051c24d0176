package io.sparrowllm.bridge;

import org.junit.AfterClass;
import org.junit.Assume;
import org.junit.BeforeClass;
import org.junit.Test;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.Transaction;
import redis.clients.jedis.exceptions.JedisConnectionException;

import java.io.File;
import java.net.ServerSocket;
import java.nio.file.Path;
import java.util.Collections;
import java.util.concurrent.TimeUnit;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

/** The Redis store against a real redis-server started here (password and db set, nothing saved). */
public class RedisRecordStoreTest {
    private static final String PASSWORD = "redis-test-pw";
    private static final int DB = 2;
    private static Process redis;
    private static int port;

    @BeforeClass
    public static void startRedis() throws Exception {
        File binary = new File("/usr/bin/redis-server");
        Assume.assumeTrue("redis-server is not installed at " + binary + ": skipping the Redis store test", binary.canExecute());
        port = freePort();
        Path dir = Fixture.tempDir("redis");
        redis = new ProcessBuilder(binary.getPath(), "--port", String.valueOf(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--requirepass", PASSWORD, "--dir", dir.toString())
                .redirectErrorStream(true).redirectOutput(dir.resolve("redis.log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            try (Jedis jedis = client()) {
                jedis.ping();
                return;
            } catch (JedisConnectionException e) {
                if (System.nanoTime() > deadline || !redis.isAlive()) {
                    throw new IllegalStateException("redis-server did not come up on port " + port, e);
                }
                Thread.sleep(50);
            }
        }
    }

    @AfterClass
    public static void stopRedis() throws Exception {
        if (redis != null) {
            redis.destroy();
            redis.waitFor(10, TimeUnit.SECONDS);
        }
    }

    @Test
    public void readsWhatThePythonSideWrites() throws Exception {
        try (Jedis jedis = client(); RedisRecordStore store = new RedisRecordStore("127.0.0.1", port, PASSWORD, DB)) {
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
            assertTrue(store.hasModel("recent"));
            assertFalse(store.hasModel("other"));
            assertEquals(Collections.singletonList("recent"), store.models());
            assertEquals("{\"text\": \"space operas\"}", store.readProfileJson(1));
            assertNull(store.readProfileJson(2));

            jedis.set("sllm:rec:recent:3", "{\"model\": \"rec");
            try {
                store.read("recent", 3);
                fail("read a truncated record");
            } catch (StoreException e) {
                assertTrue(e.getMessage(), e.getMessage().startsWith("redis sllm:rec:recent:3: not valid JSON"));
            }
        }
    }

    @Test
    public void failsFastWithAClearMessageWhenRedisIsDown() throws Exception {
        try (RedisRecordStore store = new RedisRecordStore("127.0.0.1", freePort(), null, 0)) {
            long start = System.nanoTime();
            try {
                store.read("recent", 1);
                fail("read from a closed port");
            } catch (StoreException e) {
                assertTrue(e.getMessage(), e.getMessage().startsWith("redis GET sllm:rec:recent:1 failed"));
            }
            assertTrue("no long wait", System.nanoTime() - start < TimeUnit.SECONDS.toNanos(3));
        }
    }

    @Test
    public void refusesAWrongPassword() {
        try (RedisRecordStore store = new RedisRecordStore("127.0.0.1", port, "wrong", DB)) {
            store.hasModel("recent");
            fail("authenticated with a wrong password");
        } catch (StoreException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith("redis SISMEMBER sllm:models failed"));
        }
    }

    private static Jedis client() {
        Jedis jedis = new Jedis("127.0.0.1", port, 1000);
        jedis.auth(PASSWORD);
        jedis.select(DB);
        return jedis;
    }

    static int freePort() throws Exception {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        }
    }
}
