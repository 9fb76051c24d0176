package io.sparrowllm.bridge;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** One stored ranking of a model for a user, checked once when parsed so that readers can trust it. */
final class StoredRecord {
    /**
     * Deepest nesting of objects and arrays a stored JSON value may have. A record needs 3 (record,
     * items, item) plus what its free-form meta holds. Jackson 2.6 (the host's) has no limit of its
     * own and builds trees recursively, so a deeper value is refused before it is bound.
     */
    static final int MAX_DEPTH = 64;
    /** Longest number literal accepted (Jackson 2.6 parses huge integers in quadratic time). */
    static final int MAX_NUMBER_CHARS = 64;
    /** How far ahead of this machine's clock a record's createdAt may be (clock skew between writers). */
    static final long MAX_CLOCK_SKEW_MS = 5 * 60 * 1000L;

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

    /** A record made more than {@link #MAX_CLOCK_SKEW_MS} after {@code nowMs} is invalid (never served, never stale). */
    void checkCreatedAt(long nowMs) throws StoreException {
        if (createdAt - nowMs > MAX_CLOCK_SKEW_MS) {
            throw new StoreException(StoreException.Reason.FROM_THE_FUTURE, "the " + model + " record of user " + userId
                    + " has createdAt " + createdAt + ", " + (createdAt - nowMs) / 1000 + " s ahead of this machine's clock");
        }
    }

    /**
     * One JSON value, checked with a streaming pass before it is bound: at most {@link #MAX_DEPTH}
     * deep, numbers of at most {@link #MAX_NUMBER_CHARS} characters, nothing after the value.
     * Errors name where the JSON broke (line, column), never its content.
     *
     * @return null for empty input
     */
    static JsonNode readJson(byte[] json, String where) throws StoreException {
        try (JsonParser parser = Json.MAPPER.getFactory().createParser(json)) {
            int depth = 0;
            boolean complete = false;
            for (JsonToken token = parser.nextToken(); token != null; token = parser.nextToken()) {
                if (complete) {
                    throw new StoreException(StoreException.Reason.INVALID, where + ": more than one JSON value");
                }
                switch (token) {
                    case START_OBJECT:
                    case START_ARRAY:
                        if (++depth > MAX_DEPTH) {
                            throw new StoreException(StoreException.Reason.TOO_DEEP,
                                    where + ": nested deeper than " + MAX_DEPTH + " levels");
                        }
                        break;
                    case END_OBJECT:
                    case END_ARRAY:
                        depth--;
                        break;
                    case VALUE_NUMBER_INT:
                    case VALUE_NUMBER_FLOAT:
                        if (parser.getTextLength() > MAX_NUMBER_CHARS) {
                            throw new StoreException(StoreException.Reason.INVALID,
                                    where + ": a number longer than " + MAX_NUMBER_CHARS + " characters");
                        }
                        break;
                    default:
                        break;
                }
                complete = depth == 0;
            }
            if (!complete) {
                return null;
            }
        } catch (JsonProcessingException e) {
            throw new StoreException(StoreException.Reason.INVALID, where + ": not valid JSON" + at(e.getLocation()));
        } catch (IOException e) {
            throw new StoreException(StoreException.Reason.UNREADABLE, where + ": cannot parse (" + e.getClass().getSimpleName() + ")");
        }
        try {
            return Json.MAPPER.readTree(json);
        } catch (IOException e) {
            throw new StoreException(StoreException.Reason.INVALID, where + ": cannot bind the JSON (" + e.getClass().getSimpleName() + ")");
        }
    }

    private static String at(JsonLocation location) {
        return location == null ? "" : " at line " + location.getLineNr() + ", column " + location.getColumnNr();
    }

    /**
     * Parses the contract's record JSON, expected to be the record of {@code model} for {@code userId}.
     *
     * @param where names the record's location in error messages
     */
    static StoredRecord parse(byte[] json, String model, int userId, String where) throws StoreException {
        JsonNode root = readJson(json, where);
        if (root == null || !root.isObject()) {
            throw invalid(where, "not a JSON object");
        }
        String recordModel = text(root, "model", where);
        int recordUser = integer(root, "userId", where);
        if (!model.equals(recordModel) || userId != recordUser) {
            String other = BridgeConfig.MODEL_NAME.matcher(recordModel).matches() ? "'" + recordModel + "'" : "another model";
            throw invalid(where, "holds the record of model " + other + " for user " + recordUser
                    + ", not of '" + model + "' for user " + userId);
        }
        JsonNode createdAt = root.get("createdAt");
        if (createdAt == null || !createdAt.isIntegralNumber() || !createdAt.canConvertToLong()) {
            throw invalid(where, "'createdAt' must be epoch milliseconds");
        }
        JsonNode itemNodes = root.get("items");
        if (itemNodes == null || !itemNodes.isArray()) {
            throw invalid(where, "'items' must be an array");
        }
        List<Item> items = new ArrayList<>(itemNodes.size());
        for (JsonNode item : itemNodes) {
            if (!item.isObject()) {
                throw invalid(where, "every item must be an object");
            }
            JsonNode score = item.get("score");
            if (score == null || !score.isNumber()) {
                throw invalid(where, "every item needs a numeric 'score'");
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

    private static StoreException invalid(String where, String what) {
        return new StoreException(StoreException.Reason.INVALID, where + ": " + what);
    }

    private static String text(JsonNode node, String field, String where) throws StoreException {
        JsonNode value = node.get(field);
        if (value == null || !value.isTextual()) {
            throw invalid(where, "'" + field + "' must be a string");
        }
        return value.asText();
    }

    private static int integer(JsonNode node, String field, String where) throws StoreException {
        JsonNode value = node.get(field);
        if (value == null || !value.isIntegralNumber() || !value.canConvertToInt()) {
            throw invalid(where, "'" + field + "' must be an integer");
        }
        return value.asInt();
    }
}
