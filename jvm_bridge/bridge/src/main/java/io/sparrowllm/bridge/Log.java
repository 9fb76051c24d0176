package io.sparrowllm.bridge;

/** One-line warnings on stderr: the stage must never flood the host's log with stack traces. */
final class Log {
    private Log() {
    }

    static void warn(String message) {
        System.err.println("sparrow-llm: " + message.replace('\n', ' ').replace('\r', ' '));
    }
}
