package io.sparrowllm.bridge;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Objects;
import java.util.Set;

/**
 * The (model, user) pairs a nearline model missed, for the Python worker to drain: bounded and
 * deduplicated so a burst of requests costs memory once per pair, and never blocking a request.
 */
final class MissQueue {
    private final int capacity;
    private final Set<Miss> pending = new LinkedHashSet<>();

    MissQueue(int capacity) {
        this.capacity = capacity;
    }

    /** Queues the pair unless it is already queued or the queue is full (then it is dropped). */
    synchronized boolean offer(String model, int userId) {
        return pending.size() < capacity && pending.add(new Miss(model, userId));
    }

    /** Removes and returns up to {@code max} pairs, oldest first. */
    synchronized List<Miss> take(int max) {
        List<Miss> taken = new ArrayList<>();
        for (Iterator<Miss> it = pending.iterator(); it.hasNext() && taken.size() < max; ) {
            taken.add(it.next());
            it.remove();
        }
        return taken;
    }

    /** One missed (model, user) pair. */
    static final class Miss {
        final String model;
        final int userId;

        Miss(String model, int userId) {
            this.model = model;
            this.userId = userId;
        }

        @Override
        public boolean equals(Object other) {
            return other instanceof Miss && ((Miss) other).model.equals(model) && ((Miss) other).userId == userId;
        }

        @Override
        public int hashCode() {
            return Objects.hash(model, userId);
        }
    }
}
