package com.sparrowrecsys.online.datamanager;

import com.fasterxml.jackson.annotation.JsonIgnore;
import com.fasterxml.jackson.databind.annotation.JsonSerialize;
import com.sparrowrecsys.online.model.Embedding;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * TEST STAND-IN of the host's movie: same getters and the same JSON (Jackson leaves out emb,
 * ratings and movieFeatures, and writes the 10 highest ratings as {@code topRatings}).
 */
public class Movie {
    private static final int TOP_RATINGS = 10;

    private int movieId;
    private String title;
    private int releaseYear;
    private String imdbId;
    private String tmdbId;
    private List<String> genres = new ArrayList<>();
    private int ratingNumber;
    private double averageRating;
    @JsonIgnore
    private Embedding emb;
    @JsonIgnore
    private List<Rating> ratings = new ArrayList<>();
    @JsonIgnore
    private Map<String, String> movieFeatures = new HashMap<>();
    @JsonSerialize(using = RatingListSerializer.class)
    private List<Rating> topRatings = new ArrayList<>();

    public int getMovieId() {
        return movieId;
    }

    public String getTitle() {
        return title;
    }

    public int getReleaseYear() {
        return releaseYear;
    }

    public String getImdbId() {
        return imdbId;
    }

    public String getTmdbId() {
        return tmdbId;
    }

    public List<String> getGenres() {
        return genres;
    }

    public int getRatingNumber() {
        return ratingNumber;
    }

    public double getAverageRating() {
        return averageRating;
    }

    public List<Rating> getRatings() {
        return ratings;
    }

    public Embedding getEmb() {
        return emb;
    }

    public Map<String, String> getMovieFeatures() {
        return movieFeatures;
    }

    public List<Rating> getTopRatings() {
        return topRatings;
    }

    void setMovieId(int movieId) {
        this.movieId = movieId;
    }

    void setTitle(String title) {
        this.title = title;
    }

    void setReleaseYear(int releaseYear) {
        this.releaseYear = releaseYear;
    }

    void setImdbId(String imdbId) {
        this.imdbId = imdbId;
    }

    void setTmdbId(String tmdbId) {
        this.tmdbId = tmdbId;
    }

    void addGenre(String genre) {
        genres.add(genre);
    }

    void setEmb(Embedding emb) {
        this.emb = emb;
    }

    /** Keeps the running average and the ten highest ratings up to date. */
    void addRating(Rating rating) {
        averageRating = (averageRating * ratingNumber + rating.getScore()) / (ratingNumber + 1);
        ratingNumber++;
        ratings.add(rating);
        topRatings.add(rating);
        topRatings.sort(Comparator.comparingDouble(Rating::getScore).reversed());
        if (topRatings.size() > TOP_RATINGS) {
            topRatings.remove(TOP_RATINGS);
        }
    }
}
