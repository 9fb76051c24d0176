package io.sparrowllm.bridge;

/** The store could not be read (unreachable, unreadable or corrupt): callers fall back to the host. */
final class StoreException extends Exception {
    StoreException(String message) {
        super(message);
    }
}
