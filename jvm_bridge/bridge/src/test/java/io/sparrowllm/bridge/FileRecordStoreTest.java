package io.sparrowllm.bridge;

import org.junit.Before;
import org.junit.Test;

import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.FileTime;
import java.util.Arrays;

import static org.junit.Assert.assertEquals;
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
        store = new FileRecordStore(dir, BridgeConfig.DEFAULT_MAX_RECORD_BYTES);
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
        assertCorrupt(file, Fixture.recordJson("recent", 1, 1L, 1).replace("\"model\":\"recent\"", "\"model\":\"Secret Words\""),
                "holds the record of model another model for user 1");
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
        Files.createSymbolicLink(dir.resolve("records/linked"), dir.resolve("records/llm"));
        assertEquals("folders with a model's name, no link", Arrays.asList("llm", "recent"), store.models());

        assertNull(store.readProfile(1));
        Fixture.writeFile(dir.resolve("profiles/1.json"), "{\"text\": \"likes \u00e9pics\"}");
        assertEquals("likes \u00e9pics", store.readProfile(1).get("text").asText());
    }

    @Test
    public void readsOnlyRegularFilesInsideTheStoreRoot() throws Exception {
        Path outside = Fixture.tempDir("outside");
        Fixture.writeFile(outside.resolve("1.json"), Fixture.recordJson("recent", 1, 1L, 1));
        Files.createDirectories(dir.resolve("records/recent"));
        Files.createSymbolicLink(dir.resolve("records/recent/1.json"), outside.resolve("1.json"));
        assertRefused("recent", 1, StoreException.Reason.NOT_REGULAR, "symbolic link");
        Fixture.mkfifo(dir.resolve("records/recent/2.json"));
        assertRefused("recent", 2, StoreException.Reason.NOT_REGULAR, "not a regular file");
        Files.createSymbolicLink(dir.resolve("records/llm"), outside);
        assertRefused("llm", 1, StoreException.Reason.UNREADABLE, "not a folder but a symbolic link");
        Files.createSymbolicLink(dir.resolve("profiles"), outside);
        try {
            store.readProfile(1);
            fail("followed a linked profiles folder");
        } catch (StoreException e) {
            assertEquals(StoreException.Reason.UNREADABLE, e.reason());
        }
    }

    @Test
    public void refusesHostileRecordsWithAStoreErrorNotACrash() throws Exception {
        Path file = dir.resolve("records/recent/1.json");
        Fixture.writeFile(file, Fixture.deepJson(200_000, false));
        assertRefused("recent", 1, StoreException.Reason.TOO_DEEP, "nested deeper than 64 levels");
        Fixture.writeFile(file, Fixture.recordJson("recent", 1, 1L, 1).replace("{\"parsed\":true}", Fixture.deepJson(64, true)));
        assertRefused("recent", 1, StoreException.Reason.TOO_DEEP, "nested deeper than 64 levels");
        Fixture.writeFile(file, Fixture.recordJson("recent", 1, 1L, 1).replace("{\"parsed\":true}", Fixture.deepJson(60, true)));
        assertEquals("60 levels of meta are fine", 1, store.read("recent", 1).items.size());

        FileRecordStore small = new FileRecordStore(dir, 1024);
        Fixture.writeFile(file, Fixture.recordJson("recent", 1, 1L, new int[200]));
        try {
            small.read("recent", 1);
            fail("read a record over the limit");
        } catch (StoreException e) {
            assertEquals(StoreException.Reason.TOO_LARGE, e.reason());
            assertEquals("record too large", e.publicMessage());
        } finally {
            small.close();
        }
    }

    @Test
    public void cachesTheFailureOfAnUnchangedHostileFile() throws Exception {
        Fixture.writeFile(dir.resolve("records/recent/1.json"), Fixture.deepJson(100_000, false));
        StoreException first = null;
        StoreException second = null;
        try {
            store.read("recent", 1);
        } catch (StoreException e) {
            first = e;
        }
        try {
            store.read("recent", 1);
        } catch (StoreException e) {
            second = e;
        }
        assertSame("not parsed again", first, second);
        Fixture.writeRecord(dir, "recent", 1, 1L, 5);
        assertEquals("replaced: read again", 5, store.read("recent", 1).items.get(0).movieId);
    }

    @Test
    public void abandonsAReadThatDoesNotEndInTime() throws Exception {
        // The race the up-front check cannot close: a regular file when checked, a FIFO when opened.
        Fixture.writeRecord(dir, "recent", 1, 1L, 1);
        BasicFileAttributes regular = Files.readAttributes(dir.resolve("records/recent/1.json"), BasicFileAttributes.class);
        Path fifo = dir.resolve("records/recent/2.json");
        Fixture.mkfifo(fifo);
        FileRecordStore quick = new FileRecordStore(dir, BridgeConfig.DEFAULT_MAX_RECORD_BYTES, 200);
        long start = System.nanoTime();
        try {
            quick.readRegularFile(fifo, regular);
            fail("read a FIFO");
        } catch (StoreException e) {
            assertEquals(StoreException.Reason.UNREADABLE, e.reason());
            assertTrue(e.getMessage(), e.getMessage().endsWith("not read within 200 ms"));
        } finally {
            // Opening the other end lets the abandoned read thread finish.
            new FileOutputStream(fifo.toFile()).close();
            quick.close();
        }
        assertTrue(System.nanoTime() - start < 5_000_000_000L);
    }

    private void assertRefused(String model, int userId, StoreException.Reason reason, String detail) {
        try {
            store.read(model, userId);
            fail("read " + model + "/" + userId);
        } catch (StoreException e) {
            assertEquals(e.getMessage(), reason, e.reason());
            assertTrue(e.getMessage(), e.getMessage().contains(detail));
            assertEquals(reason.text, e.publicMessage());
        }
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
