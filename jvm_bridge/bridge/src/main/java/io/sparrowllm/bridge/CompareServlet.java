package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sparrowrecsys.online.datamanager.DataManager;
import com.sparrowrecsys.online.datamanager.Movie;
import com.sparrowrecsys.online.recprocess.RecForYouProcess;

import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.util.function.LongSupplier;

/**
 * {@code /sparrow-llm/api/compare?id=N&size=K}: the read-only JSON behind the comparison page, the
 * host's list beside every plugin model's stored list for one user. Our own endpoint, so errors
 * are a status and a message, never the host's empty 200. The page is public: a message is one
 * of a few fixed texts and never carries a server path or anything read from the store. A number
 * that is not finite (a host movie's NaN average rating) is written as null, which the page can parse.
 */
final class CompareServlet extends HttpServlet {
    private static final int DEFAULT_SIZE = 12;
    private static final int MAX_SIZE = 800;

    private final RecordStore store;
    private final PluginModels models;
    private final BridgeConfig config;
    private final LongSupplier clock;

    CompareServlet(RecordStore store, PluginModels models, BridgeConfig config, LongSupplier clock) {
        this.store = store;
        this.models = models;
        this.config = config;
        this.clock = clock;
    }

    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response) throws IOException {
        Integer userId = Http.intParameter(request, "id");
        Integer size = request.getParameter("size") == null ? Integer.valueOf(DEFAULT_SIZE) : Http.intParameter(request, "size");
        if (userId == null) {
            error(response, HttpServletResponse.SC_BAD_REQUEST, "id must be an integer user id");
        } else if (size == null || size < 1 || size > MAX_SIZE) {
            error(response, HttpServletResponse.SC_BAD_REQUEST, "size must be an integer from 1 to " + MAX_SIZE);
        } else if (DataManager.getInstance().getUserById(userId) == null) {
            error(response, HttpServletResponse.SC_NOT_FOUND, "unknown user " + userId);
        } else {
            String body;
            try {
                body = Json.answer(compare(userId, size));
            } catch (RuntimeException | StackOverflowError e) {
                Log.warn("compare page failed for user " + userId + ": " + e.getClass().getName()
                        + (e.getMessage() == null ? "" : ": " + e.getMessage()));
                error(response, HttpServletResponse.SC_INTERNAL_SERVER_ERROR, "internal error");
                return;
            }
            Http.sendJson(response, HttpServletResponse.SC_OK, body);
        }
    }

    private ObjectNode compare(int userId, int size) {
        ObjectNode answer = Json.MAPPER.createObjectNode();
        answer.put("userId", userId);
        ObjectNode host = answer.putObject("host");
        host.put("model", config.fallbackModel());
        host.set("movies", Json.MAPPER.valueToTree(RecForYouProcess.getRecList(userId, size, config.fallbackModel())));
        ArrayNode lists = answer.putArray("models");
        long now = clock.getAsLong();
        for (String model : models.all()) {
            try {
                StoredRecord record = store.read(model, userId);
                if (record != null) {
                    record.checkCreatedAt(now);
                    lists.add(recordJson(record, size, now));
                }
            } catch (StoreException e) {
                Log.warn("compare page: " + e.getMessage());
                lists.addObject().put("model", model).put("error", e.publicMessage());
            }
        }
        answer.set("profile", profile(userId));
        return answer;
    }

    private ObjectNode recordJson(StoredRecord record, int size, long now) {
        ObjectNode json = Json.MAPPER.createObjectNode();
        json.put("model", record.model);
        json.put("backend", record.backend);
        json.put("version", record.version);
        json.put("createdAt", record.createdAt);
        json.put("stale", record.isStale(now, config.maxAgeS()));
        ArrayNode items = json.putArray("items");
        for (StoredRecord.Item item : record.items.subList(0, Math.min(size, record.items.size()))) {
            Movie movie = DataManager.getInstance().getMovieById(item.movieId);
            ObjectNode itemJson = items.addObject();
            itemJson.put("movieId", item.movieId);
            itemJson.set("movie", Json.MAPPER.valueToTree(movie));
            itemJson.put("score", item.score);
            itemJson.put("reason", item.reason);
        }
        json.set("meta", record.meta);
        return json;
    }

    /** The stored profile, or null when there is none or it cannot be read (the page shows the lists anyway). */
    private JsonNode profile(int userId) {
        try {
            return store.readProfile(userId);
        } catch (StoreException e) {
            Log.warn("compare page: no profile for user " + userId + ": " + e.getMessage());
            return null;
        }
    }

    private static void error(HttpServletResponse response, int status, String message) throws IOException {
        Http.sendJson(response, status, Json.MAPPER.createObjectNode().put("error", message).toString());
    }
}
