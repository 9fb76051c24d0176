package com.sparrowrecsys.online.datamanager;

import com.sparrowrecsys.online.model.Embedding;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * TEST STAND-IN of the host's in-memory data, loaded once from the CSV files with the host's
 * quirks: movie lines that do not split on ',' into exactly 3 fields are skipped (quoted titles
 * with commas), link rows ending in an empty tmdbId are skipped, users exist only through
 * ratings.csv and keep ratings of movies that did not load. Only the file data source exists here.
 */
public class DataManager {
    private static final DataManager INSTANCE = new DataManager();
    private static final Pattern TITLE_WITH_YEAR = Pattern.compile("(.*)\\((\\d{4})\\)\\s*");

    private final Map<Integer, Movie> movies = new LinkedHashMap<>();
    private final Map<Integer, User> users = new LinkedHashMap<>();
    private final Map<String, List<Movie>> moviesByGenre = new LinkedHashMap<>();

    public static DataManager getInstance() {
        return INSTANCE;
    }

    /** The redis keys are accepted for the host's signature; the stand-in reads files only. */
    public void loadData(String moviePath, String linkPath, String ratingPath, String movieEmbPath,
                         String userEmbPath, String movieRedisKey, String userRedisKey) {
        eachDataLine(moviePath, true, this::addMovieLine);
        eachDataLine(linkPath, true, this::addLinkLine);
        int[] ratingCount = {0};
        eachDataLine(ratingPath, true, line -> {
            addRatingLine(line);
            ratingCount[0]++;
        });
        int[] movieEmbCount = {0};
        eachDataLine(movieEmbPath, false, line -> {
            Movie movie = movies.get(embeddingId(line));
            if (movie != null) {
                movie.setEmb(parseEmbedding(line));
                movieEmbCount[0]++;
            }
        });
        int[] userEmbCount = {0};
        eachDataLine(userEmbPath, false, line -> {
            User user = users.get(embeddingId(line));
            if (user != null) {
                user.setEmb(parseEmbedding(line));
                userEmbCount[0]++;
            }
        });
        System.out.println("Loaded " + movies.size() + " movies, " + ratingCount[0] + " ratings, "
                + movieEmbCount[0] + " movie embeddings, " + userEmbCount[0] + " user embeddings.");
    }

    public List<Movie> getMovies(int size, String sortBy) {
        return sortAndCut(movies.values(), size, sortBy);
    }

    public List<Movie> getMoviesByGenre(String genre, int size, String sortBy) {
        List<Movie> inGenre = moviesByGenre.get(genre);
        return inGenre == null ? new ArrayList<>() : sortAndCut(inGenre, size, sortBy);
    }

    public Movie getMovieById(int movieId) {
        return movies.get(movieId);
    }

    public User getUserById(int userId) {
        return users.get(userId);
    }

    private static List<Movie> sortAndCut(Collection<Movie> source, int size, String sortBy) {
        List<Movie> list = new ArrayList<>(source);
        if ("rating".equals(sortBy)) {
            list.sort(Comparator.comparingDouble(Movie::getAverageRating).reversed());
        } else if ("releaseYear".equals(sortBy)) {
            list.sort(Comparator.comparingInt(Movie::getReleaseYear).reversed());
        }
        return list.size() > size ? new ArrayList<>(list.subList(0, size)) : list;
    }

    private void addMovieLine(String line) {
        String[] fields = line.split(",");
        if (fields.length != 3) {
            return;
        }
        Movie movie = new Movie();
        movie.setMovieId(Integer.parseInt(fields[0].trim()));
        String title = fields[1].trim();
        Matcher withYear = TITLE_WITH_YEAR.matcher(title);
        if (withYear.matches()) {
            movie.setTitle(withYear.group(1).trim());
            movie.setReleaseYear(Integer.parseInt(withYear.group(2)));
        } else {
            movie.setTitle(title);
            movie.setReleaseYear(-1);
        }
        for (String genre : fields[2].trim().split("\\|")) {
            movie.addGenre(genre);
            moviesByGenre.computeIfAbsent(genre, g -> new ArrayList<>()).add(movie);
        }
        movies.put(movie.getMovieId(), movie);
    }

    private void addLinkLine(String line) {
        String[] fields = line.split(",");
        Movie movie = fields.length == 3 ? movies.get(Integer.parseInt(fields[0].trim())) : null;
        if (movie != null) {
            movie.setImdbId(fields[1].trim());
            movie.setTmdbId(fields[2].trim());
        }
    }

    private void addRatingLine(String line) {
        String[] fields = line.split(",");
        Rating rating = new Rating();
        rating.setUserId(Integer.parseInt(fields[0].trim()));
        rating.setMovieId(Integer.parseInt(fields[1].trim()));
        rating.setScore(Float.parseFloat(fields[2].trim()));
        rating.setTimestamp(Long.parseLong(fields[3].trim()));
        Movie movie = movies.get(rating.getMovieId());
        if (movie != null) {
            movie.addRating(rating);
        }
        users.computeIfAbsent(rating.getUserId(), id -> {
            User user = new User();
            user.setUserId(id);
            return user;
        }).addRating(rating);
    }

    private static int embeddingId(String line) {
        return Integer.parseInt(line.substring(0, line.indexOf(':')).trim());
    }

    private static Embedding parseEmbedding(String line) {
        Embedding emb = new Embedding();
        for (String value : line.substring(line.indexOf(':') + 1).trim().split(" ")) {
            emb.addDim(Float.parseFloat(value));
        }
        return emb;
    }

    private static void eachDataLine(String path, boolean hasHeader, Consumer<String> onLine) {
        List<String> lines;
        try {
            lines = Files.readAllLines(Paths.get(path), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + path, e);
        }
        for (String line : lines.subList(hasHeader ? Math.min(1, lines.size()) : 0, lines.size())) {
            if (!line.trim().isEmpty()) {
                onLine.accept(line);
            }
        }
    }
}
