package io.sparrowllm.bridge;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.sparrowrecsys.online.datamanager.DataManager;
import com.sparrowrecsys.online.datamanager.Movie;
import com.sparrowrecsys.online.recprocess.RecForYouProcess;

import javax.servlet.ServletConfig;
import javax.servlet.ServletException;
import javax.servlet.ServletRequest;
import javax.servlet.ServletResponse;
import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.LongSupplier;
import java.util.zip.CRC32;

/**
 * The rerank stage in front of the host's /getrecforyou: for a plugin-owned model (or the A/B
 * share of the default model) it serves the stored ranking topped up with the host's order, else
 * the host's own ranking (the fallback model's) with our header whenever the store cannot give a
 * fresh, valid record, whatever the fault. Every other request, and a failure of the host ranking
 * itself, goes to the host servlet untouched, so the host's behaviour is kept.
 */
final class RerankServlet extends HttpServlet {
    /** The host's candidate count in RecForYouProcess: asking for this many gives its whole order. */
    private static final int HOST_CANDIDATES = 800;
    static final String HEADER = "X-Sparrow-LLM";

    private final HttpServlet host;
    private final RecordStore store;
    private final PluginModels models;
    private final MissQueue misses;
    private final BridgeConfig config;
    private final LongSupplier clock;

    RerankServlet(HttpServlet host, RecordStore store, PluginModels models, MissQueue misses, BridgeConfig config,
                  LongSupplier clock) {
        this.host = host;
        this.store = store;
        this.models = models;
        this.misses = misses;
        this.config = config;
        this.clock = clock;
    }

    @Override
    public void init(ServletConfig servletConfig) throws ServletException {
        super.init(servletConfig);
        host.init(servletConfig);
    }

    @Override
    public void destroy() {
        host.destroy();
        super.destroy();
    }

    @Override
    protected void service(HttpServletRequest request, HttpServletResponse response) throws ServletException, IOException {
        Answer answer = null;
        try {
            answer = answer(request);
        } catch (Throwable t) {
            Log.warn("rerank stage failed, the host answers instead: " + t.getClass().getName()
                    + (t.getMessage() == null ? "" : ": " + t.getMessage()));
        }
        if (answer == null) {
            host.service((ServletRequest) request, (ServletResponse) response);
            return;
        }
        response.setHeader(HEADER, answer.header);
        Http.sendJson(response, HttpServletResponse.SC_OK, answer.body);
    }

    /** Null when the request is not ours: the host servlet answers it. */
    private Answer answer(HttpServletRequest request) throws Exception {
        Integer userId = Http.intParameter(request, "id");
        Integer size = Http.intParameter(request, "size");
        String requested = request.getParameter("model");
        if (!"GET".equals(request.getMethod()) || userId == null || size == null || size < 0 || requested == null) {
            return null;
        }
        String model = pluginModel(requested, userId);
        // An unknown user gets the host's []; checking first also keeps made-up ids out of the miss queue.
        if (model == null || DataManager.getInstance().getUserById(userId) == null) {
            return null;
        }
        StoredRecord record;
        long now = clock.getAsLong();
        try {
            record = store.read(model, userId);
            if (record != null) {
                record.checkCreatedAt(now);
            }
        } catch (StoreException e) {
            Log.warn("cannot use the " + model + " record of user " + userId + " (" + e.publicMessage()
                    + "), serving the host ranking: " + e.getMessage());
            return hostRanking(model, userId, size);
        } catch (RuntimeException | StackOverflowError e) {
            // A bug of ours must not hand a plugin model to the host's ranker of that name.
            Log.warn("cannot use the " + model + " record of user " + userId + ", serving the host ranking: "
                    + e.getClass().getName() + (e.getMessage() == null ? "" : ": " + e.getMessage()));
            return hostRanking(model, userId, size);
        }
        if (record == null || record.isStale(now, config.maxAgeS())) {
            if (config.nearlineModels().contains(model)) {
                misses.offer(model, userId);
            }
            return hostRanking(model, userId, size);
        }
        return new Answer(model, "store", storedThenHost(record, userId, size));
    }

    /** The model this stage serves for the request, or null when the host's own ranker should. */
    private String pluginModel(String requested, int userId) {
        if (models.owns(requested)) {
            return requested;
        }
        boolean inAbShare = config.abPercent() > 0 && requested.equals(config.fallbackModel())
                && abBucket(userId) < config.abPercent();
        return inAbShare ? config.abModel() : null;
    }

    /** A stable bucket 0..99 per user, the same on every request and every restart. */
    private static int abBucket(int userId) {
        CRC32 crc = new CRC32();
        crc.update(Integer.toString(userId).getBytes(StandardCharsets.UTF_8));
        return (int) Math.floorMod(crc.getValue(), 100L);
    }

    private Answer hostRanking(String model, int userId, int size) throws JsonProcessingException {
        return new Answer(model, "host-fallback", RecForYouProcess.getRecList(userId, size, config.fallbackModel()));
    }

    /** The record's movies that load, in stored order, then the rest of the host's order; cut to size. */
    private List<Movie> storedThenHost(StoredRecord record, int userId, int size) {
        Map<Integer, Movie> ranked = new LinkedHashMap<>();
        for (StoredRecord.Item item : record.items) {
            Movie movie = DataManager.getInstance().getMovieById(item.movieId);
            if (movie != null) {
                ranked.putIfAbsent(item.movieId, movie);
            }
        }
        if (ranked.size() < size) {
            for (Movie movie : RecForYouProcess.getRecList(userId, HOST_CANDIDATES, config.fallbackModel())) {
                ranked.putIfAbsent(movie.getMovieId(), movie);
            }
        }
        List<Movie> movies = new ArrayList<>(ranked.values());
        return movies.size() > size ? movies.subList(0, size) : movies;
    }

    /** What the stage serves, built in full before anything is written so a failure can still fall back. */
    private static final class Answer {
        final String header;
        final String body;

        /** The body is the host's own JSON of the list (a default mapper, like the host's). */
        Answer(String model, String source, List<Movie> movies) throws JsonProcessingException {
            this.header = model + "; source=" + source;
            this.body = Json.MAPPER.writeValueAsString(movies);
        }
    }
}
