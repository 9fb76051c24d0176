package com.sparrowrecsys.online.recprocess;

import com.sparrowrecsys.online.datamanager.DataManager;
import com.sparrowrecsys.online.datamanager.Movie;
import com.sparrowrecsys.online.datamanager.User;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

/**
 * TEST STAND-IN of the host's "Recommended For You" recall and rank. The Redis refresh of the
 * user's emb/features and the "nerualcf" TF Serving call are not implemented: like any other
 * model name they keep the candidate order.
 */
public class RecForYouProcess {
    private static final int CANDIDATE_SIZE = 800;

    /** Empty for an unknown user; a negative size fails like the host's (IndexOutOfBoundsException). */
    public static List<Movie> getRecList(int userId, int size, String model) {
        User user = DataManager.getInstance().getUserById(userId);
        if (user == null) {
            return new ArrayList<>();
        }
        List<Movie> ranked = ranker(user, DataManager.getInstance().getMovies(CANDIDATE_SIZE, "rating"), model);
        return ranked.size() > size ? ranked.subList(0, size) : ranked;
    }

    /**
     * "emb" sorts by cosine(user emb, movie emb), most similar first, ties in candidate order; a null model
     * fails like the host's. Each candidate is scored once, as the host does (a map of scores, then a sort).
     */
    public static List<Movie> ranker(User user, List<Movie> candidates, String model) {
        List<Movie> ranked = new ArrayList<>(candidates);
        switch (model) {
            case "emb":
                Map<Movie, Double> scores = new IdentityHashMap<>();
                ranked.forEach(movie -> scores.put(movie, similarity(user, movie)));
                ranked.sort(Comparator.comparingDouble((Movie movie) -> scores.get(movie)).reversed());
                break;
            default:
                break;
        }
        return ranked;
    }

    private static double similarity(User user, Movie movie) {
        return user.getEmb() == null ? -1 : user.getEmb().calculateSimilarity(movie.getEmb());
    }
}
