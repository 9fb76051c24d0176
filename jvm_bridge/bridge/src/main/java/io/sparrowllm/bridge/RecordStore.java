package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;

import java.util.List;

/**
 * Read-only view of the plugin's store: the Python side writes records, the stage and the page read
 * them. Every read is bounded (size, nesting, time) and every failure is a {@link StoreException}.
 */
interface RecordStore extends AutoCloseable {
    /** The record of a model for a user, or null when there is none (or the model name is invalid). */
    StoredRecord read(String model, int userId) throws StoreException;

    /** Every model in the store's model index, sorted. */
    List<String> models() throws StoreException;

    /** The user's profile (checked JSON), or null when there is none. */
    JsonNode readProfile(int userId) throws StoreException;

    @Override
    void close();

    static RecordStore open(BridgeConfig config) {
        switch (config.storeKind()) {
            case REDIS:
                return new RedisRecordStore(config.redisHost(), config.redisPort(), config.redisPassword(), config.redisDb(),
                        config.redisTimeoutMs(), config.maxRecordBytes());
            default:
                return new FileRecordStore(config.storeDir(), config.maxRecordBytes());
        }
    }
}
