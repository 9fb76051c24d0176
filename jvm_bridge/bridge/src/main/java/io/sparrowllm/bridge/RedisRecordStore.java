package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.JedisPool;
import redis.clients.jedis.JedisPoolConfig;
import redis.clients.jedis.Response;
import redis.clients.jedis.Transaction;
import redis.clients.jedis.exceptions.JedisConnectionException;
import redis.clients.jedis.exceptions.JedisDataException;
import redis.clients.jedis.exceptions.JedisException;

import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.function.Function;

/**
 * The Redis backend ({@code sllm:rec:<model>:<userId>}, set {@code sllm:models}) on the bridge's
 * own small pool: never the host's single shared connection, which breaks under concurrent
 * requests.
 *
 * <p>Faults: connect, read and pool-wait are bounded by one short timeout, so a paused Redis
 * costs a request about that long and no more. A connection that fails is closed and dropped (no
 * QUIT sent to a server that does not answer). When a pooled connection turns out dead without a
 * timeout (Redis restarted), the idle connections, which died with it, are dropped too and the
 * command is tried again on a fresh one, so after a restart every request is served again at
 * once. Idle connections are also checked in the background (PING while idle).
 */
final class RedisRecordStore implements RecordStore {
    private static final int POOL_SIZE = 16;
    /** A pooled connection that died without a timeout (Redis restarted) is replaced this often per command. */
    private static final int STALE_RETRIES = 2;
    private static final long IDLE_CHECK_EVERY_MS = 10_000;
    private static final String MODELS_KEY = "sllm:models";

    private final Pool pool;
    private final int maxBytes;

    RedisRecordStore(String host, int port, String password, int db, int timeoutMs, int maxBytes) {
        JedisPoolConfig poolConfig = new JedisPoolConfig();
        poolConfig.setMaxTotal(POOL_SIZE);
        poolConfig.setMaxIdle(POOL_SIZE);
        poolConfig.setMaxWaitMillis(timeoutMs);
        poolConfig.setBlockWhenExhausted(true);
        poolConfig.setTestOnBorrow(false);
        poolConfig.setTestWhileIdle(true);
        poolConfig.setTimeBetweenEvictionRunsMillis(IDLE_CHECK_EVERY_MS);
        poolConfig.setNumTestsPerEvictionRun(-1);
        poolConfig.setMinEvictableIdleTimeMillis(60_000);
        poolConfig.setJmxEnabled(false);
        this.pool = new Pool(poolConfig, host, port, timeoutMs, password, db);
        this.maxBytes = maxBytes;
    }

    @Override
    public StoredRecord read(String model, int userId) throws StoreException {
        if (!BridgeConfig.MODEL_NAME.matcher(model).matches()) {
            return null;
        }
        String key = "sllm:rec:" + model + ":" + userId;
        byte[] json = readLimited(key);
        return json == null ? null : StoredRecord.parse(json, model, userId, "redis " + key);
    }

    @Override
    public List<String> models() throws StoreException {
        List<String> models = new ArrayList<>();
        for (String model : call("SMEMBERS " + MODELS_KEY, jedis -> jedis.smembers(MODELS_KEY))) {
            if (BridgeConfig.MODEL_NAME.matcher(model).matches()) {
                models.add(model);
            }
        }
        Collections.sort(models);
        return models;
    }

    @Override
    public JsonNode readProfile(int userId) throws StoreException {
        String key = "sllm:profile:" + userId;
        byte[] json = readLimited(key);
        return json == null ? null : StoredRecord.readJson(json, "redis " + key);
    }

    @Override
    public void close() {
        pool.close();
    }

    /** The string at key, read only up to maxBytes + 1 bytes (one transaction: EXISTS, GETRANGE); null when missing. */
    private byte[] readLimited(String key) throws StoreException {
        byte[] raw = key.getBytes(StandardCharsets.UTF_8);
        byte[] value = call("GET " + key, jedis -> {
            Transaction transaction = jedis.multi();
            Response<Boolean> exists = transaction.exists(raw);
            Response<byte[]> head = transaction.getrange(raw, 0, maxBytes);
            transaction.exec();
            return exists.get() ? head.get() : null;
        });
        if (value != null && value.length > maxBytes) {
            throw new StoreException(StoreException.Reason.TOO_LARGE, "redis " + key + ": larger than " + maxBytes
                    + " bytes (SPARROW_LLM_MAX_RECORD_BYTES)");
        }
        return value;
    }

    private <T> T call(String what, Function<Jedis, T> command) throws StoreException {
        for (int attempt = 0; ; attempt++) {
            Jedis jedis;
            try {
                jedis = pool.getResource();
            } catch (JedisException e) {
                throw new StoreException(StoreException.Reason.UNREACHABLE, "redis " + what + " failed: " + describe(e));
            }
            try {
                return command.apply(jedis);
            } catch (JedisConnectionException e) {
                // Closed here, so that the pool drops it without a QUIT to a server that may not answer.
                disconnect(jedis);
                if (isTimeout(e) || attempt >= STALE_RETRIES) {
                    throw new StoreException(StoreException.Reason.UNREACHABLE, "redis " + what + " failed: " + describe(e));
                }
                // A dead pooled connection without a timeout: Redis restarted, and the idle ones died with it.
                pool.dropIdle();
            } catch (JedisDataException e) {
                throw new StoreException(StoreException.Reason.INVALID, "redis " + what + ": " + e.getMessage());
            } catch (JedisException e) {
                throw new StoreException(StoreException.Reason.UNREACHABLE, "redis " + what + " failed: " + describe(e));
            } finally {
                jedis.close();
            }
        }
    }

    /** Closes the socket now; the connection is already marked broken, so closing the Jedis drops it. */
    private static void disconnect(Jedis jedis) {
        try {
            jedis.disconnect();
        } catch (JedisException e) {
            // the socket is closed either way
        }
    }

    private static boolean isTimeout(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof SocketTimeoutException) {
                return true;
            }
        }
        return false;
    }

    /** The exception and its causes, one line, no stack trace. */
    private static String describe(Throwable e) {
        StringBuilder text = new StringBuilder(String.valueOf(e.getMessage()));
        for (Throwable cause = e.getCause(); cause != null && cause != cause.getCause(); cause = cause.getCause()) {
            String part = cause.getClass().getSimpleName() + ": " + cause.getMessage();
            if (text.indexOf(String.valueOf(cause.getMessage())) < 0) {
                text.append(" (").append(part).append(')');
            }
        }
        return text.toString();
    }

    /** The Jedis pool with the one thing it does not expose: dropping every idle connection at once. */
    private static final class Pool extends JedisPool {
        Pool(JedisPoolConfig config, String host, int port, int timeoutMs, String password, int db) {
            super(config, host, port, timeoutMs, timeoutMs, password, db, "sparrow-llm-bridge");
        }

        void dropIdle() {
            internalPool.clear();
        }
    }
}
