package io.sparrowllm.bridge;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.TimeUnit;

/**
 * The file backend: {@code <dir>/records/<model>/<userId>.json}, written by the Python side with
 * temp file + rename. Parsed records are cached by file version (file key, mtime, size), so an
 * unchanged file is not parsed again on every request and a replaced one is reloaded.
 */
final class FileRecordStore implements RecordStore {
    private static final int CACHE_MAX = 10_000;

    private final Path recordsDir;
    private final Path profilesDir;
    private final Map<Path, Cached> cache = Collections.synchronizedMap(new LinkedHashMap<Path, Cached>(64, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Path, Cached> eldest) {
            return size() > CACHE_MAX;
        }
    });

    FileRecordStore(Path dir) {
        this.recordsDir = dir.resolve("records");
        this.profilesDir = dir.resolve("profiles");
    }

    @Override
    public StoredRecord read(String model, int userId) throws StoreException {
        if (!BridgeConfig.MODEL_NAME.matcher(model).matches()) {
            return null;
        }
        Path file = recordsDir.resolve(model).resolve(userId + ".json");
        BasicFileAttributes attributes;
        try {
            attributes = Files.readAttributes(file, BasicFileAttributes.class);
        } catch (NoSuchFileException e) {
            cache.remove(file);
            return null;
        } catch (IOException e) {
            throw new StoreException("cannot read " + file + ": " + e);
        }
        Cached cached = cache.get(file);
        if (cached != null && cached.isVersion(attributes)) {
            return cached.record;
        }
        byte[] json = readIfExists(file);
        if (json == null) {
            return null;
        }
        StoredRecord record = StoredRecord.parse(json, model, userId, file.toString());
        cache.put(file, new Cached(attributes, record));
        return record;
    }

    @Override
    public boolean hasModel(String model) {
        return BridgeConfig.MODEL_NAME.matcher(model).matches() && Files.isDirectory(recordsDir.resolve(model));
    }

    @Override
    public List<String> models() throws StoreException {
        List<String> models = new ArrayList<>();
        if (!Files.isDirectory(recordsDir)) {
            return models;
        }
        try (DirectoryStream<Path> folders = Files.newDirectoryStream(recordsDir, Files::isDirectory)) {
            for (Path folder : folders) {
                String name = folder.getFileName().toString();
                if (BridgeConfig.MODEL_NAME.matcher(name).matches()) {
                    models.add(name);
                }
            }
        } catch (IOException e) {
            throw new StoreException("cannot list " + recordsDir + ": " + e);
        }
        Collections.sort(models);
        return models;
    }

    @Override
    public String readProfileJson(int userId) throws StoreException {
        byte[] json = readIfExists(profilesDir.resolve(userId + ".json"));
        return json == null ? null : new String(json, StandardCharsets.UTF_8);
    }

    @Override
    public void close() {
        cache.clear();
    }

    private static byte[] readIfExists(Path file) throws StoreException {
        try {
            return Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            return null;
        } catch (IOException e) {
            throw new StoreException("cannot read " + file + ": " + e);
        }
    }

    /** A parsed record and the file version it came from. */
    private static final class Cached {
        private final Object fileKey;
        private final long modifiedNanos;
        private final long size;
        private final StoredRecord record;

        Cached(BasicFileAttributes attributes, StoredRecord record) {
            this.fileKey = attributes.fileKey();
            this.modifiedNanos = attributes.lastModifiedTime().to(TimeUnit.NANOSECONDS);
            this.size = attributes.size();
            this.record = record;
        }

        /** A rename gives a new file key; an in-place rewrite changes the mtime or the size. */
        boolean isVersion(BasicFileAttributes attributes) {
            return Objects.equals(fileKey, attributes.fileKey())
                    && modifiedNanos == attributes.lastModifiedTime().to(TimeUnit.NANOSECONDS)
                    && size == attributes.size();
        }
    }
}
