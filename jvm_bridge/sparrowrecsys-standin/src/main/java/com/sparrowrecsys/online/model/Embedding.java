package com.sparrowrecsys.online.model;

import java.util.ArrayList;

/** TEST STAND-IN of the host's embedding vector, with the host's cosine similarity. */
public class Embedding {
    private ArrayList<Float> embVector = new ArrayList<>();

    public Embedding() {
    }

    public Embedding(ArrayList<Float> embVector) {
        this.embVector = embVector;
    }

    public void addDim(Float element) {
        embVector.add(element);
    }

    public ArrayList<Float> getEmbVector() {
        return embVector;
    }

    public void setEmbVector(ArrayList<Float> embVector) {
        this.embVector = embVector;
    }

    /** Cosine similarity; -1 when the other vector is missing or of another size (host behaviour). */
    public double calculateSimilarity(Embedding other) {
        if (other == null || other.embVector.size() != embVector.size() || embVector.isEmpty()) {
            return -1;
        }
        double dot = 0, norm = 0, otherNorm = 0;
        for (int i = 0; i < embVector.size(); i++) {
            double a = embVector.get(i), b = other.embVector.get(i);
            dot += a * b;
            norm += a * a;
            otherNorm += b * b;
        }
        return dot / (Math.sqrt(norm) * Math.sqrt(otherNorm));
    }
}
