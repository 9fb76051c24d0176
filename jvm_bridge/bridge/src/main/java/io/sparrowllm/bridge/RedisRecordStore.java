package io.sparrowllm.bridge;

import redis.clients.jedis.Jedis;
import redis.clients.jedis.JedisPool;
import redis.clients.jedis.JedisPoolConfig;
import redis.clients.jedis.exceptions.JedisException;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.function.Function;

/**
 * The Redis backend ({@code sllm:rec:<model>:<userId>}, set {@code sllm:models}) on the bridge's
 * own small pool with short timeouts: never the host's single shared connection, which breaks
 * under concurrent requests, and never a request that waits long on a dead Redis.
 */
final class RedisRecordStore implements RecordStore {
    private static final int TIMEOUT_MS = 500;
    private static final int POOL_SIZE = 16;

    private final JedisPool pool;

    RedisRecordStore(String host, int port, String password, int db) {
        JedisPoolConfig poolConfig = new JedisPoolConfig();
        poolConfig.setMaxTotal(POOL_SIZE);
        poolConfig.setMaxIdle(POOL_SIZE);
        poolConfig.setMaxWaitMillis(TIMEOUT_MS);
        pool = new JedisPool(poolConfig, host, port, TIMEOUT_MS, password, db);
    }

    @Override
    public StoredRecord read(String model, int userId) throws StoreException {
        if (!BridgeConfig.MODEL_NAME.matcher(model).matches()) {
            return null;
        }
        String key = "sllm:rec:" + model + ":" + userId;
        String json = call("GET " + key, jedis -> jedis.get(key));
        return json == null ? null : StoredRecord.parse(json.getBytes(StandardCharsets.UTF_8), model, userId, "redis " + key);
    }

    @Override
    public boolean hasModel(String model) throws StoreException {
        return BridgeConfig.MODEL_NAME.matcher(model).matches()
                && call("SISMEMBER sllm:models", jedis -> jedis.sismember("sllm:models", model));
    }

    @Override
    public List<String> models() throws StoreException {
        List<String> models = new ArrayList<>();
        for (String model : call("SMEMBERS sllm:models", jedis -> jedis.smembers("sllm:models"))) {
            if (BridgeConfig.MODEL_NAME.matcher(model).matches()) {
                models.add(model);
            }
        }
        Collections.sort(models);
        return models;
    }

    @Override
    public String readProfileJson(int userId) throws StoreException {
        String key = "sllm:profile:" + userId;
        return call("GET " + key, jedis -> jedis.get(key));
    }

    @Override
    public void close() {
        pool.close();
    }

    private <T> T call(String what, Function<Jedis, T> command) throws StoreException {
        try (Jedis jedis = pool.getResource()) {
            return command.apply(jedis);
        } catch (JedisException e) {
            Throwable cause = e.getCause();
            throw new StoreException("redis " + what + " failed: " + e.getMessage()
                    + (cause == null ? "" : " (" + cause.getMessage() + ")"));
        }
    }
}
