package io.sparrowllm.bridge;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sparrowrecsys.online.datamanager.DataManager;
import com.sparrowrecsys.online.datamanager.Movie;
import com.sparrowrecsys.online.datamanager.Rating;
import com.sparrowrecsys.online.datamanager.User;
import com.sparrowrecsys.online.model.Embedding;
import com.sparrowrecsys.online.recprocess.RecForYouProcess;
import com.sparrowrecsys.online.util.Config;

import java.io.IOException;
import java.io.InputStream;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Collectors;

/**
 * The Py4J entry point: every method builds its whole answer in Java and returns one JSON string,
 * so Python never makes a call per element. Bad arguments raise IllegalArgumentException, which
 * py4j hands to Python with its message. Answers are streamed with Jackson's generator, each movie
 * as JSON written once and reused: an 800-movie answer is then mostly a string copy. A number that
 * is not finite (a NaN rating, a NaN average) is written as null ({@link Json#ANSWERS}).
 */
public final class RecallEntryPoint {
    private static final Properties VERSIONS = versions();
    /** "Liked" as in the host's own samples (label = rating >= 3.5). */
    private static final double LIKED = 3.5;
    private static final int GENRE_SEEDS = 5;
    /** The host's candidate count in RecForYouProcess.getRecList: getMovies(800, "rating"). */
    private static final int HOST_CANDIDATES = 800;

    private final DataManager data = DataManager.getInstance();
    private final MissQueue misses;
    private final String hostModel;
    private final Map<Integer, MovieJson> movieJson = new ConcurrentHashMap<>();
    /** getMovies(800, "rating"): the same for every user and every call, as the host's movies never change. */
    private volatile List<Movie> hostCandidates;
    private volatile List<Integer> userIds;

    RecallEntryPoint(MissQueue misses, String hostModel) {
        this.misses = misses;
        this.hostModel = hostModel;
    }

    /**
     * {@code {"bridge", "py4j", "movies", "users"}}. The versions are the keys of version.properties
     * (written by the build) and never string constants here: the shade plugin would relocate a
     * literal "py4j" in our bytecode to the shaded package name.
     */
    public String info() {
        ObjectNode info = Json.MAPPER.createObjectNode();
        new TreeSet<>(VERSIONS.stringPropertyNames()).forEach(name -> info.put(name, VERSIONS.getProperty(name)));
        info.put("movies", allMovies().size());
        info.put("users", knownUserIds().size());
        return Json.answer(info);
    }

    /**
     * The sorted ids of the users the host knows. The host API cannot list users, so these are
     * the raters of the loaded movies: a user whose every rating is of a movie that did not load
     * is left out (getUserById still answers for them).
     */
    public String userIds() {
        ArrayNode ids = Json.MAPPER.createArrayNode();
        knownUserIds().forEach(ids::add);
        return Json.answer(ids);
    }

    /** {@code {"userId", "known", "source", "movies": [movie...]}}; source is host, genre or embedding. */
    public String candidates(int userId, String source, int size) {
        Source from = Source.of(source);
        checkCount("size", size);
        User user = data.getUserById(userId);
        List<Movie> movies = user == null ? Collections.emptyList() : new Recall(from).of(user, size);
        return write(json -> {
            json.writeStartObject();
            json.writeNumberField("userId", userId);
            json.writeBooleanField("known", user != null);
            json.writeStringField("source", source);
            writeMovies(json, movies, false);
            json.writeEndObject();
        });
    }

    /** {@code {"userId", "known", "ratings": [[movieId, rating, timestamp], ...]}}, oldest first. */
    public String history(int userId) {
        User user = data.getUserById(userId);
        return write(json -> {
            json.writeStartObject();
            json.writeNumberField("userId", userId);
            json.writeBooleanField("known", user != null);
            writeRatings(json, user);
            json.writeEndObject();
        });
    }

    /** {@code {"movies": [movie...], "missing": [ids]}} for a JSON array of movie ids. */
    public String movies(String idsJson, boolean withEmb) {
        List<Movie> movies = new ArrayList<>();
        List<Integer> missing = new ArrayList<>();
        for (int id : parseIds(idsJson, "idsJson")) {
            Movie movie = data.getMovieById(id);
            if (movie == null) {
                missing.add(id);
            } else {
                movies.add(movie);
            }
        }
        return write(json -> {
            json.writeStartObject();
            writeMovies(json, movies, withEmb);
            json.writeArrayFieldStart("missing");
            for (int id : missing) {
                json.writeNumber(id);
            }
            json.writeEndArray();
            json.writeEndObject();
        });
    }

    /**
     * {@code {"users": [{"userId", "known", "ratings", "candidates": [ids]}], "movies": [movie...]}}:
     * "movies" holds every loaded movie that a user's candidates or ratings name, each once.
     */
    public String userBundles(String userIdsJson, String source, int size, boolean withEmb) {
        Source from = Source.of(source);
        checkCount("size", size);
        Set<Integer> ids = parseIds(userIdsJson, "userIdsJson");
        Map<Integer, Movie> named = new LinkedHashMap<>();
        Recall recall = new Recall(from);
        return write(json -> {
            json.writeStartObject();
            json.writeArrayFieldStart("users");
            for (int userId : ids) {
                User user = data.getUserById(userId);
                json.writeStartObject();
                json.writeNumberField("userId", userId);
                json.writeBooleanField("known", user != null);
                writeRatings(json, user);
                json.writeArrayFieldStart("candidates");
                if (user != null) {
                    for (Movie movie : recall.of(user, size)) {
                        json.writeNumber(movie.getMovieId());
                        named.put(movie.getMovieId(), movie);
                    }
                    for (Rating rating : user.getRatings()) {
                        Movie movie = data.getMovieById(rating.getMovieId());
                        if (movie != null) {
                            named.put(movie.getMovieId(), movie);
                        }
                    }
                }
                json.writeEndArray();
                json.writeEndObject();
            }
            json.writeEndArray();
            writeMovies(json, named.values(), withEmb);
            json.writeEndObject();
        });
    }

    /** {@code [{"model", "userId"}, ...]}: up to {@code max} misses, removed from the queue. */
    public String takeMisses(int max) {
        checkCount("max", max);
        ArrayNode taken = Json.MAPPER.createArrayNode();
        for (MissQueue.Miss miss : misses.take(max)) {
            taken.addObject().put("model", miss.model).put("userId", miss.userId);
        }
        return Json.answer(taken);
    }

    /** Where candidates come from. */
    private enum Source {
        HOST, GENRE, EMBEDDING;

        static Source of(String name) {
            for (Source source : values()) {
                if (source.name().toLowerCase(Locale.ROOT).equals(name)) {
                    return source;
                }
            }
            throw new IllegalArgumentException("unknown candidate source '" + name + "': use host, genre or embedding");
        }
    }

    /**
     * The candidates of one call's users. The host's recall, RecForYouProcess.getRecList(user, size, model),
     * is ranker(user, getMovies(800, "rating"), model) cut to size, after refreshing the user's emb and
     * features from Redis when Config says so. The 800 are the same for every user (the host loads its movies
     * and their ratings once), so when there is nothing to refresh the catalogue is sorted once, not on every
     * call for every user (a cost that grew with the catalogue).
     */
    private final class Recall {
        private final Source source;

        Recall(Source source) {
            this.source = source;
        }

        List<Movie> of(User user, int size) {
            switch (source) {
                case GENRE:
                    return byLikedGenres(user, size);
                case EMBEDDING:
                    return byEmbedding(user, size);
                default:
                    break;
            }
            boolean refreshes = !Config.DATA_SOURCE_FILE.equals(Config.EMB_DATA_SOURCE)
                    || Config.IS_LOAD_USER_FEATURE_FROM_REDIS;
            if (refreshes) {
                return RecForYouProcess.getRecList(user.getUserId(), size, hostModel);
            }
            List<Movie> candidates = hostCandidates;
            if (candidates == null) {
                candidates = Collections.unmodifiableList(new ArrayList<>(data.getMovies(HOST_CANDIDATES, "rating")));
                hostCandidates = candidates;
            }
            // A copy each: the host's ranker must not be able to reorder the next user's input.
            List<Movie> ranked = RecForYouProcess.ranker(user, new ArrayList<>(candidates), hostModel);
            return ranked.size() > size ? ranked.subList(0, size) : ranked;
        }
    }

    /**
     * Top by rating of each genre of the user's latest liked movies, interleaved round-robin so
     * every genre gets a share, without duplicates.
     */
    private List<Movie> byLikedGenres(User user, int size) {
        Set<String> genres = new LinkedHashSet<>();
        user.getRatings().stream()
                .filter(rating -> rating.getScore() >= LIKED && data.getMovieById(rating.getMovieId()) != null)
                .sorted(Comparator.comparingLong(Rating::getTimestamp).reversed())
                .limit(GENRE_SEEDS)
                .forEach(rating -> genres.addAll(data.getMovieById(rating.getMovieId()).getGenres()));
        List<List<Movie>> perGenre = genres.stream()
                .map(genre -> data.getMoviesByGenre(genre, size, "rating"))
                .collect(Collectors.toList());
        Map<Integer, Movie> picked = new LinkedHashMap<>();
        for (int rank = 0; picked.size() < size; rank++) {
            boolean anyLeft = false;
            for (List<Movie> movies : perGenre) {
                if (rank < movies.size() && picked.size() < size) {
                    anyLeft = true;
                    picked.putIfAbsent(movies.get(rank).getMovieId(), movies.get(rank));
                }
            }
            if (!anyLeft) {
                break;
            }
        }
        return new ArrayList<>(picked.values());
    }

    /** Movies with an embedding, most similar to the user's first (the host's own helper sorts the other way). */
    private List<Movie> byEmbedding(User user, int size) {
        Embedding userEmb = user.getEmb();
        if (userEmb == null) {
            return Collections.emptyList();
        }
        return data.getMovies(Integer.MAX_VALUE, "rating").stream()
                .filter(movie -> movie.getEmb() != null)
                .sorted(Comparator.comparingDouble((Movie movie) -> userEmb.calculateSimilarity(movie.getEmb())).reversed())
                .limit(size)
                .collect(Collectors.toList());
    }

    private List<Movie> allMovies() {
        return data.getMovies(Integer.MAX_VALUE, "none");
    }

    private List<Integer> knownUserIds() {
        List<Integer> ids = userIds;
        if (ids == null) {
            Set<Integer> raters = new TreeSet<>();
            for (Movie movie : allMovies()) {
                movie.getRatings().forEach(rating -> raters.add(rating.getUserId()));
            }
            ids = Collections.unmodifiableList(new ArrayList<>(raters));
            userIds = ids;
        }
        return ids;
    }

    /** What an answer writes with the generator it is given. */
    private interface Body {
        void write(JsonGenerator json) throws IOException;
    }

    private static String write(Body body) {
        StringWriter out = new StringWriter(4096);
        try (JsonGenerator json = Json.ANSWERS.getFactory().createGenerator(out)) {
            body.write(json);
        } catch (IOException e) {
            throw new UncheckedIOException(e);  // a StringWriter does not fail
        }
        return out.toString();
    }

    /** {@code "ratings": [[movieId, rating, timestamp], ...]} oldest first; empty for an unknown user. */
    private static void writeRatings(JsonGenerator json, User user) throws IOException {
        json.writeArrayFieldStart("ratings");
        if (user != null) {
            List<Rating> ratings = new ArrayList<>(user.getRatings());
            ratings.sort(Comparator.comparingLong(Rating::getTimestamp));
            for (Rating rating : ratings) {
                json.writeStartArray();
                json.writeNumber(rating.getMovieId());
                json.writeNumber(rating.getScore());
                json.writeNumber(rating.getTimestamp());
                json.writeEndArray();
            }
        }
        json.writeEndArray();
    }

    /** {@code "movies": [movie row...]}. */
    private void writeMovies(JsonGenerator json, Iterable<Movie> movies, boolean withEmb) throws IOException {
        json.writeArrayFieldStart("movies");
        for (Movie movie : movies) {
            json.writeRawValue(movieJson(movie).text(withEmb));
        }
        json.writeEndArray();
    }

    /**
     * The movie's JSON from the cache, written on first use. The host loads its movies once at start-up
     * and never changes them; a movie object that is not the cached one (a reload) is written again.
     */
    private MovieJson movieJson(Movie movie) {
        MovieJson cached = movieJson.get(movie.getMovieId());
        if (cached == null || cached.movie != movie) {
            cached = new MovieJson(movie);
            movieJson.put(movie.getMovieId(), cached);
        }
        return cached;
    }

    /** One movie's JSON with and without its embedding. */
    private static final class MovieJson {
        final Movie movie;
        final String plain;
        final String withEmb;

        MovieJson(Movie movie) {
            this.movie = movie;
            this.plain = Json.answer(movieRow(movie, false));
            this.withEmb = Json.answer(movieRow(movie, true));
        }

        String text(boolean emb) {
            return emb ? withEmb : plain;
        }
    }

    /**
     * {@code [movieId, title, releaseYear, [genres], averageRating, ratingNumber]}, then {@code [floats] | null}
     * when the embedding is asked for: a row, not an object, because field names were half of every answer's
     * bytes and of Python's decoding time.
     */
    private static ArrayNode movieRow(Movie movie, boolean withEmb) {
        ArrayNode row = Json.MAPPER.createArrayNode();
        row.add(movie.getMovieId());
        row.add(movie.getTitle());
        row.add(movie.getReleaseYear());
        ArrayNode genres = row.addArray();
        movie.getGenres().forEach(genres::add);
        row.add(movie.getAverageRating());
        row.add(movie.getRatingNumber());
        if (withEmb) {
            if (movie.getEmb() == null) {
                row.addNull();
            } else {
                ArrayNode emb = row.addArray();
                movie.getEmb().getEmbVector().forEach(emb::add);
            }
        }
        return row;
    }

    private static Set<Integer> parseIds(String json, String argument) {
        Set<Integer> ids = new LinkedHashSet<>();
        JsonNode array;
        try {
            array = json == null ? null : Json.MAPPER.readTree(json);
        } catch (IOException e) {
            array = null;
        }
        if (array == null || !array.isArray()) {
            throw new IllegalArgumentException(argument + " must be a JSON array of integer ids, e.g. [1, 2], got: " + json);
        }
        for (JsonNode id : array) {
            if (!id.isIntegralNumber() || !id.canConvertToInt()) {
                throw new IllegalArgumentException(argument + " must hold integer ids only, got " + id);
            }
            ids.add(id.asInt());
        }
        return ids;
    }

    private static void checkCount(String argument, int count) {
        if (count < 0) {
            throw new IllegalArgumentException(argument + " must be 0 or more, got " + count);
        }
    }

    private static Properties versions() {
        Properties versions = new Properties();
        try (InputStream in = RecallEntryPoint.class.getResourceAsStream("version.properties")) {
            if (in != null) {
                versions.load(in);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return versions;
    }
}
