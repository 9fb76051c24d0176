package io.sparrowllm.bridge;

import org.junit.Before;
import org.junit.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.Arrays;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotSame;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

/** The file store reads the Python side's files, caches per file version and reports corruption. */
public class FileRecordStoreTest {
    private Path dir;
    private FileRecordStore store;

    @Before
    public void newStore() {
        dir = Fixture.tempDir("store");
        store = new FileRecordStore(dir);
    }

    @Test
    public void readsARecord() throws Exception {
        Fixture.writeRecord(dir, "recent", 1, 1764340000123L, 858, 1, 50);
        StoredRecord record = store.read("recent", 1);
        assertEquals("recent", record.model);
        assertEquals(1, record.userId);
        assertEquals("test", record.backend);
        assertEquals("recent-v1", record.version);
        assertEquals(1764340000123L, record.createdAt);
        assertEquals(3, record.items.size());
        assertEquals(858, record.items.get(0).movieId);
        assertEquals(1.0, record.items.get(0).score, 0);
        assertEquals("because 0", record.items.get(0).reason);
        assertTrue(record.meta.get("parsed").asBoolean());

        assertNull("no record of that user", store.read("recent", 2));
        assertNull("no such model", store.read("other", 1));
        assertNull("not a model name: never a path", store.read("../recent", 1));
    }

    @Test
    public void parsesOnlyChangedFiles() throws Exception {
        Fixture.writeRecord(dir, "recent", 1, 1L, 1, 2);
        StoredRecord first = store.read("recent", 1);
        assertSame("unchanged file: the cached record", first, store.read("recent", 1));

        Fixture.writeRecord(dir, "recent", 1, 2L, 3, 4, 5);
        StoredRecord renamed = store.read("recent", 1);
        assertEquals("replaced by rename: reloaded", 2L, renamed.createdAt);

        Path file = dir.resolve("records/recent/1.json");
        FileTime before = Files.getLastModifiedTime(file);
        Files.write(file, Fixture.recordJson("recent", 1, 30L, 6, 7, 8).getBytes(StandardCharsets.UTF_8));
        Files.setLastModifiedTime(file, before);
        StoredRecord rewritten = store.read("recent", 1);
        assertNotSame("rewritten in place with another size: reloaded", renamed, rewritten);
        assertEquals(30L, rewritten.createdAt);

        Files.delete(file);
        assertNull("deleted: gone", store.read("recent", 1));
    }

    @Test
    public void reportsCorruptRecords() {
        Path file = dir.resolve("records/recent/1.json");
        String json = Fixture.recordJson("recent", 1, 1L, 1, 2);
        assertCorrupt(file, json.substring(0, json.length() / 2), "not valid JSON");
        assertCorrupt(file, "[1, 2]", "not a JSON object");
        assertCorrupt(file, "", "");
        assertCorrupt(file, Fixture.recordJson("recent", 2, 1L, 1), "holds the record of model 'recent' for user 2");
        assertCorrupt(file, json.replace("\"items\"", "\"things\""), "'items' must be an array");
        assertCorrupt(file, json.replace("\"createdAt\":1", "\"createdAt\":\"yesterday\""), "'createdAt' must be epoch milliseconds");
        assertCorrupt(file, json.replace("\"movieId\":1", "\"movieId\":\"one\""), "'movieId' must be an integer");
    }

    @Test
    public void listsModelsAndReadsProfiles() throws Exception {
        assertTrue(store.models().isEmpty());
        Fixture.writeRecord(dir, "recent", 1, 1L, 1);
        Fixture.writeRecord(dir, "llm", 1, 1L, 1);
        Files.createDirectories(dir.resolve("records/Not-A-Model"));
        Files.write(dir.resolve("records/stray.json"), new byte[0]);
        assertEquals(Arrays.asList("llm", "recent"), store.models());
        assertTrue(store.hasModel("llm"));
        assertFalse(store.hasModel("other"));
        assertFalse(store.hasModel(".."));

        assertNull(store.readProfileJson(1));
        Fixture.writeFile(dir.resolve("profiles/1.json"), "{\"text\": \"likes \u00e9pics\"}");
        assertEquals("{\"text\": \"likes \u00e9pics\"}", store.readProfileJson(1));
    }

    private void assertCorrupt(Path file, String content, String expected) {
        Fixture.writeFile(file, content);
        try {
            store.read("recent", 1);
            fail("accepted " + content);
        } catch (StoreException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith(file.toString()) && e.getMessage().contains(expected));
        }
    }
}
