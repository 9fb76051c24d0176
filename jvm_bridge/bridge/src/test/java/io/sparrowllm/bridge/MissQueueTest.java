package io.sparrowllm.bridge;

import org.junit.Test;

import java.util.List;
import java.util.stream.Collectors;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

/** The miss queue keeps each (model, user) once, drops when full, and drains oldest first. */
public class MissQueueTest {
    @Test
    public void deduplicatesBoundsAndDrainsInOrder() {
        MissQueue queue = new MissQueue(3);
        assertTrue(queue.offer("llm", 1));
        assertFalse("already queued", queue.offer("llm", 1));
        assertTrue(queue.offer("other", 1));
        assertTrue(queue.offer("llm", 2));
        assertFalse("full: dropped", queue.offer("llm", 3));

        assertEquals("[llm:1, other:1]", names(queue.take(2)));
        assertTrue("room again", queue.offer("llm", 3));
        assertEquals("[llm:2, llm:3]", names(queue.take(10)));
        assertTrue(queue.take(10).isEmpty());
        assertTrue("a drained pair can be queued again", queue.offer("llm", 1));
    }

    private static String names(List<MissQueue.Miss> misses) {
        return misses.stream().map(miss -> miss.model + ":" + miss.userId).collect(Collectors.toList()).toString();
    }
}
