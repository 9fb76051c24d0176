package io.sparrowllm.bridge;

import java.util.List;

/** Read-only view of the plugin's store: the Python side writes records, the stage and the page read them. */
interface RecordStore extends AutoCloseable {
    /** The record of a model for a user, or null when there is none (or the model name is invalid). */
    StoredRecord read(String model, int userId) throws StoreException;

    /** Whether the store holds records of this model. */
    boolean hasModel(String model) throws StoreException;

    /** Every model with records in the store, sorted. */
    List<String> models() throws StoreException;

    /** The user's profile JSON as stored, or null when there is none. */
    String readProfileJson(int userId) throws StoreException;

    @Override
    void close();

    static RecordStore open(BridgeConfig config) {
        switch (config.storeKind()) {
            case REDIS:
                return new RedisRecordStore(config.redisHost(), config.redisPort(), config.redisPassword(), config.redisDb());
            default:
                return new FileRecordStore(config.storeDir());
        }
    }
}
