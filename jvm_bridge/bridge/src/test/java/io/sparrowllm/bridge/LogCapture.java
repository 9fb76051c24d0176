package io.sparrowllm.bridge;

import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

/** Captures stderr (where the bridge logs, and where a stack trace would go) while it is open; still echoes it. */
final class LogCapture implements AutoCloseable {
    private final PrintStream original = System.err;
    private final ByteArrayOutputStream captured = new ByteArrayOutputStream();

    LogCapture() {
        System.setErr(new PrintStream(new OutputStream() {
            @Override
            public synchronized void write(int b) {
                captured.write(b);
                original.write(b);
            }

            @Override
            public synchronized void write(byte[] b, int off, int len) {
                captured.write(b, off, len);
                original.write(b, off, len);
            }
        }, true));
    }

    synchronized String text() {
        return new String(captured.toByteArray(), StandardCharsets.UTF_8);
    }

    List<String> lines() {
        String text = text();
        return text.isEmpty() ? new ArrayList<>() : new ArrayList<>(Arrays.asList(text.split("\n")));
    }

    /** Nothing but one-line warnings of ours: no stack trace, no other output. */
    void assertNoStackTrace() {
        for (String line : lines()) {
            assertFalse("a stack trace in the log:\n" + text(), line.startsWith("\tat ") || line.contains("Exception in thread")
                    || line.startsWith("Caused by:"));
        }
    }

    /** Exactly one log line, ours, containing every one of {@code parts}; no stack trace. */
    void assertOneLine(String... parts) {
        assertOneOf(lines(), parts);
    }

    /**
     * {@link #assertOneLine}, besides the line that the store's model index is unreadable: a model only the
     * store names asks the index too, whose outage is logged once, when its refresh falls due.
     */
    void assertOneLineBesidesTheModelIndex(String... parts) {
        List<String> lines = lines();
        lines.removeIf(line -> line.startsWith("sparrow-llm: cannot list the store's models"));
        assertOneOf(lines, parts);
    }

    private void assertOneOf(List<String> lines, String... parts) {
        assertNoStackTrace();
        assertEquals("one log line: " + text(), 1, lines.size());
        assertTrue(lines.get(0), lines.get(0).startsWith("sparrow-llm: "));
        for (String part : parts) {
            assertTrue("'" + part + "' in: " + lines.get(0), lines.get(0).contains(part));
        }
    }

    @Override
    public void close() {
        System.setErr(original);
    }
}
