package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sparrowrecsys.online.datamanager.DataManager;
import com.sparrowrecsys.online.datamanager.Movie;
import com.sparrowrecsys.online.datamanager.Rating;
import com.sparrowrecsys.online.datamanager.User;
import com.sparrowrecsys.online.model.Embedding;
import com.sparrowrecsys.online.recprocess.RecForYouProcess;

import java.io.IOException;
import java.io.InputStream;
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
import java.util.stream.Collectors;

/**
 * The Py4J entry point: every method builds its whole answer in Java and returns one JSON string,
 * so Python never makes a call per element. Bad arguments raise IllegalArgumentException, which
 * py4j hands to Python with its message.
 */
public final class RecallEntryPoint {
    private static final Properties VERSIONS = versions();
    /** "Liked" as in the host's own samples (label = rating >= 3.5). */
    private static final double LIKED = 3.5;
    private static final int GENRE_SEEDS = 5;

    private final DataManager data = DataManager.getInstance();
    private final MissQueue misses;
    private final String hostModel;
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
        return info.toString();
    }

    /**
     * The sorted ids of the users the host knows. The host API cannot list users, so these are
     * the raters of the loaded movies: a user whose every rating is of a movie that did not load
     * is left out (getUserById still answers for them).
     */
    public String userIds() {
        ArrayNode ids = Json.MAPPER.createArrayNode();
        knownUserIds().forEach(ids::add);
        return ids.toString();
    }

    /** {@code {"userId", "known", "source", "movies": [movie...]}}; source is host, genre or embedding. */
    public String candidates(int userId, String source, int size) {
        Source from = Source.of(source);
        checkCount("size", size);
        User user = data.getUserById(userId);
        ObjectNode answer = Json.MAPPER.createObjectNode();
        answer.put("userId", userId);
        answer.put("known", user != null);
        answer.put("source", source);
        ArrayNode movies = answer.putArray("movies");
        if (user != null) {
            candidateMovies(user, from, size).forEach(movie -> movies.add(movieJson(movie, false)));
        }
        return answer.toString();
    }

    /** {@code {"userId", "known", "ratings": [[movieId, rating, timestamp], ...]}}, oldest first. */
    public String history(int userId) {
        User user = data.getUserById(userId);
        ObjectNode answer = Json.MAPPER.createObjectNode();
        answer.put("userId", userId);
        answer.put("known", user != null);
        answer.set("ratings", ratingsJson(user));
        return answer.toString();
    }

    /** {@code {"movies": [movie...], "missing": [ids]}} for a JSON array of movie ids. */
    public String movies(String idsJson, boolean withEmb) {
        ObjectNode answer = Json.MAPPER.createObjectNode();
        ArrayNode movies = answer.putArray("movies");
        ArrayNode missing = answer.putArray("missing");
        for (int id : parseIds(idsJson, "idsJson")) {
            Movie movie = data.getMovieById(id);
            if (movie == null) {
                missing.add(id);
            } else {
                movies.add(movieJson(movie, withEmb));
            }
        }
        return answer.toString();
    }

    /**
     * {@code {"users": [{"userId", "known", "ratings", "candidates": [ids]}], "movies": [movie...]}}:
     * "movies" holds every loaded movie that a user's candidates or ratings name, each once.
     */
    public String userBundles(String userIdsJson, String source, int size, boolean withEmb) {
        Source from = Source.of(source);
        checkCount("size", size);
        ObjectNode answer = Json.MAPPER.createObjectNode();
        ArrayNode users = answer.putArray("users");
        Map<Integer, Movie> named = new LinkedHashMap<>();
        for (int userId : parseIds(userIdsJson, "userIdsJson")) {
            User user = data.getUserById(userId);
            ObjectNode bundle = users.addObject();
            bundle.put("userId", userId);
            bundle.put("known", user != null);
            bundle.set("ratings", ratingsJson(user));
            ArrayNode candidateIds = bundle.putArray("candidates");
            if (user == null) {
                continue;
            }
            for (Movie movie : candidateMovies(user, from, size)) {
                candidateIds.add(movie.getMovieId());
                named.put(movie.getMovieId(), movie);
            }
            for (Rating rating : user.getRatings()) {
                Movie movie = data.getMovieById(rating.getMovieId());
                if (movie != null) {
                    named.put(movie.getMovieId(), movie);
                }
            }
        }
        ArrayNode movies = answer.putArray("movies");
        named.values().forEach(movie -> movies.add(movieJson(movie, withEmb)));
        return answer.toString();
    }

    /** {@code [{"model", "userId"}, ...]}: up to {@code max} misses, removed from the queue. */
    public String takeMisses(int max) {
        checkCount("max", max);
        ArrayNode taken = Json.MAPPER.createArrayNode();
        for (MissQueue.Miss miss : misses.take(max)) {
            taken.addObject().put("model", miss.model).put("userId", miss.userId);
        }
        return taken.toString();
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

    private List<Movie> candidateMovies(User user, Source source, int size) {
        switch (source) {
            case GENRE:
                return byLikedGenres(user, size);
            case EMBEDDING:
                return byEmbedding(user, size);
            default:
                return RecForYouProcess.getRecList(user.getUserId(), size, hostModel);
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

    /** {@code [[movieId, rating, timestamp], ...]} oldest first; empty for an unknown user. */
    private static ArrayNode ratingsJson(User user) {
        ArrayNode ratings = Json.MAPPER.createArrayNode();
        if (user != null) {
            user.getRatings().stream()
                    .sorted(Comparator.comparingLong(Rating::getTimestamp))
                    .forEach(rating -> ratings.addArray()
                            .add(rating.getMovieId()).add(rating.getScore()).add(rating.getTimestamp()));
        }
        return ratings;
    }

    private static ObjectNode movieJson(Movie movie, boolean withEmb) {
        ObjectNode json = Json.MAPPER.createObjectNode();
        json.put("movieId", movie.getMovieId());
        json.put("title", movie.getTitle());
        json.put("releaseYear", movie.getReleaseYear());
        ArrayNode genres = json.putArray("genres");
        movie.getGenres().forEach(genres::add);
        json.put("averageRating", movie.getAverageRating());
        json.put("ratingNumber", movie.getRatingNumber());
        if (withEmb) {
            if (movie.getEmb() == null) {
                json.putNull("emb");
            } else {
                ArrayNode emb = json.putArray("emb");
                movie.getEmb().getEmbVector().forEach(emb::add);
            }
        }
        return json;
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
