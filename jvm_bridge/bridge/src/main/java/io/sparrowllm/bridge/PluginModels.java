package io.sparrowllm.bridge;

import java.util.Collections;
import java.util.Set;
import java.util.SortedSet;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Which {@code model} values the plugin owns: the declared ones (the plugin's own names,
 * SPARROW_LLM_MODELS, the nearline and A/B models), which need no store, plus every model the
 * store's model index has listed since start. The index is asked at most once per
 * {@link #REFRESH_MS}, by one request at a time and only for a model that is not declared; a model
 * once listed stays owned, so while the store is down the last known set still holds and each of
 * its models falls back to the host with our header. The fallback model is never owned.
 */
final class PluginModels {
    static final long REFRESH_MS = 1000;

    private final BridgeConfig config;
    private final RecordStore store;
    private final Set<String> listed = ConcurrentHashMap.newKeySet();
    private final AtomicBoolean refreshing = new AtomicBoolean();
    private volatile long lastRefreshNanos;
    private volatile boolean refreshed;
    /** Whether the last listing failed: an outage is logged once, not on every refresh. */
    private volatile boolean failing;

    PluginModels(BridgeConfig config, RecordStore store) {
        this.config = config;
        this.store = store;
        refresh();
    }

    /** Whether the stage serves this model. */
    boolean owns(String model) {
        if (model.equals(config.fallbackModel())) {
            return false;
        }
        if (config.declaredModels().contains(model)) {
            return true;
        }
        refreshIfDue();
        return listed.contains(model);
    }

    /** Every owned model, sorted. */
    SortedSet<String> all() {
        refreshIfDue();
        SortedSet<String> all = new TreeSet<>(config.declaredModels());
        all.addAll(listed);
        return Collections.unmodifiableSortedSet(all);
    }

    private void refreshIfDue() {
        if (!refreshed || System.nanoTime() - lastRefreshNanos >= REFRESH_MS * 1_000_000) {
            refresh();
        }
    }

    /** One request at a time asks the store; the others go on with what is known. */
    private void refresh() {
        if (!refreshing.compareAndSet(false, true)) {
            return;
        }
        try {
            for (String model : store.models()) {
                if (!model.equals(config.fallbackModel())) {
                    listed.add(model);
                }
            }
            failing = false;
        } catch (StoreException | RuntimeException e) {
            if (!failing) {
                Log.warn("cannot list the store's models, keeping the last known ones: "
                        + (e instanceof StoreException ? e.getMessage() : e.toString()));
            }
            failing = true;
        } finally {
            lastRefreshNanos = System.nanoTime();
            refreshed = true;
            refreshing.set(false);
        }
    }
}
