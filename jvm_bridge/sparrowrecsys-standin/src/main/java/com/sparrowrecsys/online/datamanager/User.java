package com.sparrowrecsys.online.datamanager;

import com.fasterxml.jackson.annotation.JsonIgnore;
import com.fasterxml.jackson.databind.annotation.JsonSerialize;
import com.sparrowrecsys.online.model.Embedding;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * TEST STAND-IN of the host's user: exists only through ratings.csv and keeps every rating in
 * file order, including ratings of movies that did not load.
 */
public class User {
    private int userId;
    private double averageRating;
    private double highestRating;
    private double lowestRating;
    private int ratingCount;
    @JsonSerialize(using = RatingListSerializer.class)
    private List<Rating> ratings = new ArrayList<>();
    @JsonIgnore
    private Embedding emb;
    @JsonIgnore
    private Map<String, String> userFeatures = new HashMap<>();

    public int getUserId() {
        return userId;
    }

    public double getAverageRating() {
        return averageRating;
    }

    public double getHighestRating() {
        return highestRating;
    }

    public double getLowestRating() {
        return lowestRating;
    }

    public int getRatingCount() {
        return ratingCount;
    }

    public List<Rating> getRatings() {
        return ratings;
    }

    public Embedding getEmb() {
        return emb;
    }

    public Map<String, String> getUserFeatures() {
        return userFeatures;
    }

    public void setUserFeatures(Map<String, String> userFeatures) {
        this.userFeatures = userFeatures;
    }

    void setUserId(int userId) {
        this.userId = userId;
    }

    void setEmb(Embedding emb) {
        this.emb = emb;
    }

    void addRating(Rating rating) {
        double score = rating.getScore();
        highestRating = ratingCount == 0 ? score : Math.max(highestRating, score);
        lowestRating = ratingCount == 0 ? score : Math.min(lowestRating, score);
        averageRating = (averageRating * ratingCount + score) / (ratingCount + 1);
        ratingCount++;
        ratings.add(rating);
    }
}
