package io.sparrowllm.bridge;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** One stored ranking of a model for a user, checked once when parsed so that readers can trust it. */
final class StoredRecord {
    /** One ranked movie of a record. */
    static final class Item {
        final int movieId;
        final double score;
        final String reason;

        Item(int movieId, double score, String reason) {
            this.movieId = movieId;
            this.score = score;
            this.reason = reason;
        }
    }

    final String model;
    final int userId;
    final String backend;
    final String version;
    /** Epoch milliseconds. */
    final long createdAt;
    /** In ranked order. */
    final List<Item> items;
    /** Free-form, as the writer left it. */
    final JsonNode meta;

    private StoredRecord(String model, int userId, String backend, String version, long createdAt,
                         List<Item> items, JsonNode meta) {
        this.model = model;
        this.userId = userId;
        this.backend = backend;
        this.version = version;
        this.createdAt = createdAt;
        this.items = items;
        this.meta = meta;
    }

    /** Whether the record is older than {@code maxAgeS} seconds at {@code nowMs}; 0 means no limit. */
    boolean isStale(long nowMs, long maxAgeS) {
        return maxAgeS > 0 && nowMs - createdAt > maxAgeS * 1000;
    }

    /**
     * Parses the contract's record JSON, expected to be the record of {@code model} for {@code userId}.
     *
     * @param where names the record's location in error messages
     */
    static StoredRecord parse(byte[] json, String model, int userId, String where) throws StoreException {
        JsonNode root;
        try {
            root = Json.MAPPER.readTree(json);
        } catch (JsonProcessingException e) {
            throw new StoreException(where + ": not valid JSON (" + e.getOriginalMessage() + ")");
        } catch (IOException e) {
            throw new StoreException(where + ": cannot parse (" + e + ")");
        }
        if (root == null || !root.isObject()) {
            throw new StoreException(where + ": not a JSON object");
        }
        String recordModel = text(root, "model", where);
        int recordUser = integer(root, "userId", where);
        if (!model.equals(recordModel) || userId != recordUser) {
            throw new StoreException(where + ": holds the record of model '" + recordModel + "' for user " + recordUser
                    + ", not of '" + model + "' for user " + userId);
        }
        JsonNode createdAt = root.get("createdAt");
        if (createdAt == null || !createdAt.isIntegralNumber()) {
            throw new StoreException(where + ": 'createdAt' must be epoch milliseconds");
        }
        JsonNode itemNodes = root.get("items");
        if (itemNodes == null || !itemNodes.isArray()) {
            throw new StoreException(where + ": 'items' must be an array");
        }
        List<Item> items = new ArrayList<>(itemNodes.size());
        for (JsonNode item : itemNodes) {
            JsonNode score = item.get("score");
            if (score == null || !score.isNumber()) {
                throw new StoreException(where + ": every item needs a numeric 'score'");
            }
            JsonNode reason = item.get("reason");
            items.add(new Item(integer(item, "movieId", where), score.asDouble(),
                    reason == null || reason.isNull() ? "" : reason.asText()));
        }
        JsonNode meta = root.get("meta");
        return new StoredRecord(model, userId, text(root, "backend", where), text(root, "version", where),
                createdAt.asLong(), Collections.unmodifiableList(items),
                meta == null ? Json.MAPPER.createObjectNode() : meta);
    }

    private static String text(JsonNode node, String field, String where) throws StoreException {
        JsonNode value = node.get(field);
        if (value == null || !value.isTextual()) {
            throw new StoreException(where + ": '" + field + "' must be a string");
        }
        return value.asText();
    }

    private static int integer(JsonNode node, String field, String where) throws StoreException {
        JsonNode value = node.get(field);
        if (value == null || !value.isIntegralNumber() || !value.canConvertToInt()) {
            throw new StoreException(where + ": '" + field + "' must be an integer");
        }
        return value.asInt();
    }
}
