package com.sparrowrecsys.online.recprocess;

import com.sparrowrecsys.online.datamanager.DataManager;
import com.sparrowrecsys.online.datamanager.Movie;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** TEST STAND-IN of the host's item-to-item recommendations behind /getsimilarmovie. */
public class SimilarMovieProcess {
    private static final int PER_GENRE = 100;

    public static List<Movie> getRecList(int movieId, int size, String model) {
        Movie movie = DataManager.getInstance().getMovieById(movieId);
        if (movie == null) {
            return new ArrayList<>();
        }
        List<Movie> ranked = ranker(movie, candidateGenerator(movie), model);
        return ranked.size() > size ? ranked.subList(0, size) : ranked;
    }

    /** The top movies by rating of each of the movie's genres, without the movie itself. */
    public static List<Movie> candidateGenerator(Movie movie) {
        Map<Integer, Movie> candidates = new LinkedHashMap<>();
        for (String genre : movie.getGenres()) {
            for (Movie candidate : DataManager.getInstance().getMoviesByGenre(genre, PER_GENRE, "rating")) {
                candidates.put(candidate.getMovieId(), candidate);
            }
        }
        candidates.remove(movie.getMovieId());
        return new ArrayList<>(candidates.values());
    }

    /** "emb": cosine to the movie (fails when the movie has no emb, as the host's does); else genre overlap and rating. */
    public static List<Movie> ranker(Movie movie, List<Movie> candidates, String model) {
        List<Movie> ranked = new ArrayList<>(candidates);
        Comparator<Movie> byScore = "emb".equals(model)
                ? Comparator.comparingDouble(candidate -> movie.getEmb().calculateSimilarity(candidate.getEmb()))
                : Comparator.comparingDouble(candidate -> genreAndRatingScore(movie, candidate));
        ranked.sort(byScore.reversed());
        return ranked;
    }

    private static double genreAndRatingScore(Movie movie, Movie candidate) {
        long shared = candidate.getGenres().stream().filter(movie.getGenres()::contains).count();
        return 0.7 * shared / Math.max(1, movie.getGenres().size()) + 0.3 * candidate.getAverageRating() / 5;
    }
}
