package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SeekableByteChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The file backend: {@code <dir>/records/<model>/<userId>.json}, written by the Python side with
 * temp file + rename. Parsed records are cached by file version (file key, mtime, size), so an
 * unchanged file is not parsed again on every request and a replaced one is reloaded.
 *
 * <p>Nothing outside the store root is read: no symbolic link below the root is followed (the
 * records and profiles folders, a model's folder and the record itself must be the real thing),
 * only regular files are opened (a FIFO or device would block or never end), a file is read up to
 * the size limit only, and a read that does not finish in time is abandoned.
 */
final class FileRecordStore implements RecordStore {
    static final long READ_TIMEOUT_MS = 1000;
    private static final int CACHE_MAX = 10_000;
    private static final int READ_THREADS = 4;
    private static final int READ_QUEUE = 256;
    private static final LinkOption[] NO_FOLLOW = {LinkOption.NOFOLLOW_LINKS};

    private final Path recordsDir;
    private final Path profilesDir;
    private final int maxBytes;
    private final long readTimeoutMs;
    private final ThreadPoolExecutor reads;
    private final Map<Path, Cached> cache = Collections.synchronizedMap(new LinkedHashMap<Path, Cached>(64, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Path, Cached> eldest) {
            return size() > CACHE_MAX;
        }
    });

    FileRecordStore(Path dir, int maxBytes) {
        this(dir, maxBytes, READ_TIMEOUT_MS);
    }

    FileRecordStore(Path dir, int maxBytes, long readTimeoutMs) {
        this.recordsDir = dir.resolve("records");
        this.profilesDir = dir.resolve("profiles");
        this.maxBytes = maxBytes;
        this.readTimeoutMs = readTimeoutMs;
        AtomicInteger threads = new AtomicInteger();
        this.reads = new ThreadPoolExecutor(READ_THREADS, READ_THREADS, 30, TimeUnit.SECONDS,
                new ArrayBlockingQueue<>(READ_QUEUE), task -> {
                    Thread thread = new Thread(task, "sparrow-llm-store-read-" + threads.incrementAndGet());
                    thread.setDaemon(true);
                    return thread;
                });
        this.reads.allowCoreThreadTimeOut(true);
    }

    @Override
    public StoredRecord read(String model, int userId) throws StoreException {
        if (!BridgeConfig.MODEL_NAME.matcher(model).matches()) {
            return null;
        }
        Path modelDir = recordsDir.resolve(model);
        if (!isFolder(recordsDir) || !isFolder(modelDir)) {
            return null;
        }
        Path file = modelDir.resolve(userId + ".json");
        BasicFileAttributes attributes = attributes(file);
        if (attributes == null) {
            cache.remove(file);
            return null;
        }
        Cached cached = cache.get(file);
        if (cached != null && cached.isVersion(attributes)) {
            return cached.result();
        }
        byte[] json = readRegularFile(file, attributes);
        if (json == null) {
            return null;
        }
        try {
            StoredRecord record = StoredRecord.parse(json, model, userId, file.toString());
            cache.put(file, new Cached(attributes, record, null));
            return record;
        } catch (StoreException e) {
            // The same bytes fail the same way: a hostile file is not parsed again on every request.
            cache.put(file, new Cached(attributes, null, e));
            throw e;
        }
    }

    @Override
    public List<String> models() throws StoreException {
        List<String> models = new ArrayList<>();
        if (!isFolder(recordsDir)) {
            return models;
        }
        try (DirectoryStream<Path> folders = Files.newDirectoryStream(recordsDir, path -> Files.isDirectory(path, NO_FOLLOW))) {
            for (Path folder : folders) {
                String name = folder.getFileName().toString();
                if (BridgeConfig.MODEL_NAME.matcher(name).matches()) {
                    models.add(name);
                }
            }
        } catch (IOException | RuntimeException e) {
            throw new StoreException(StoreException.Reason.UNREADABLE, "cannot list " + recordsDir + ": " + e);
        }
        Collections.sort(models);
        return models;
    }

    @Override
    public JsonNode readProfile(int userId) throws StoreException {
        if (!isFolder(profilesDir)) {
            return null;
        }
        Path file = profilesDir.resolve(userId + ".json");
        BasicFileAttributes attributes = attributes(file);
        byte[] json = attributes == null ? null : readRegularFile(file, attributes);
        return json == null ? null : StoredRecord.readJson(json, file.toString());
    }

    @Override
    public void close() {
        cache.clear();
        reads.shutdownNow();
    }

    /** True for a real folder, false when there is nothing there; anything else (a file, a link) is a fault. */
    private static boolean isFolder(Path dir) throws StoreException {
        BasicFileAttributes attributes = attributes(dir);
        if (attributes == null) {
            return false;
        }
        if (!attributes.isDirectory()) {
            throw new StoreException(StoreException.Reason.UNREADABLE, dir + ": not a folder"
                    + (attributes.isSymbolicLink() ? " but a symbolic link (not followed)" : ""));
        }
        return true;
    }

    /** The path's own attributes (a link is not followed), or null when it does not exist. */
    private static BasicFileAttributes attributes(Path path) throws StoreException {
        try {
            return Files.readAttributes(path, BasicFileAttributes.class, NO_FOLLOW);
        } catch (NoSuchFileException e) {
            return null;
        } catch (IOException e) {
            throw new StoreException(StoreException.Reason.UNREADABLE, "cannot read " + path + ": " + e.getClass().getSimpleName()
                    + (e.getMessage() == null ? "" : " " + e.getMessage()));
        }
    }

    /**
     * The file's bytes: only a regular file (never a link, FIFO, device or folder), only up to the
     * size limit, and only if the read ends within the time limit. Null when the file went away.
     */
    byte[] readRegularFile(Path file, BasicFileAttributes attributes) throws StoreException {
        if (!attributes.isRegularFile()) {
            throw new StoreException(StoreException.Reason.NOT_REGULAR, file + ": not a regular file"
                    + (attributes.isSymbolicLink() ? " but a symbolic link (not followed)" : ""));
        }
        if (attributes.size() > maxBytes) {
            throw tooLarge(file);
        }
        Future<byte[]> read;
        try {
            read = reads.submit(() -> readAtMost(file));
        } catch (RejectedExecutionException e) {
            throw new StoreException(StoreException.Reason.UNREADABLE, file + ": too many slow reads in progress");
        }
        try {
            byte[] json = read.get(readTimeoutMs, TimeUnit.MILLISECONDS);
            if (json != null && json.length > maxBytes) {
                throw tooLarge(file);
            }
            return json;
        } catch (TimeoutException e) {
            read.cancel(true);
            throw new StoreException(StoreException.Reason.UNREADABLE, file + ": not read within " + readTimeoutMs + " ms");
        } catch (InterruptedException e) {
            read.cancel(true);
            Thread.currentThread().interrupt();
            throw new StoreException(StoreException.Reason.UNREADABLE, file + ": interrupted");
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof NoSuchFileException) {
                return null;
            }
            throw new StoreException(StoreException.Reason.UNREADABLE, "cannot read " + file + ": "
                    + cause.getClass().getSimpleName() + (cause.getMessage() == null ? "" : " " + cause.getMessage()));
        }
    }

    /** At most maxBytes + 1 bytes (one more tells it is too large), opened without following a link. */
    private byte[] readAtMost(Path file) throws IOException {
        try (SeekableByteChannel channel = Files.newByteChannel(file, StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS)) {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream((int) Math.min(Math.max(channel.size(), 0) + 1, maxBytes + 1L));
            ByteBuffer buffer = ByteBuffer.allocate(8192);
            while (bytes.size() <= maxBytes) {
                buffer.clear();
                buffer.limit((int) Math.min(buffer.capacity(), maxBytes + 1L - bytes.size()));
                int n = channel.read(buffer);
                if (n < 0) {
                    break;
                }
                bytes.write(buffer.array(), 0, n);
            }
            return bytes.toByteArray();
        }
    }

    private StoreException tooLarge(Path file) {
        return new StoreException(StoreException.Reason.TOO_LARGE, file + ": larger than " + maxBytes
                + " bytes (SPARROW_LLM_MAX_RECORD_BYTES)");
    }

    /** A parsed record (or the error its bytes give) and the file version it came from. */
    private static final class Cached {
        private final Object fileKey;
        private final long modifiedNanos;
        private final long size;
        private final StoredRecord record;
        private final StoreException error;

        Cached(BasicFileAttributes attributes, StoredRecord record, StoreException error) {
            this.fileKey = attributes.fileKey();
            this.modifiedNanos = attributes.lastModifiedTime().to(TimeUnit.NANOSECONDS);
            this.size = attributes.size();
            this.record = record;
            this.error = error;
        }

        StoredRecord result() throws StoreException {
            if (error != null) {
                throw error;
            }
            return record;
        }

        /** A rename gives a new file key; an in-place rewrite changes the mtime or the size. */
        boolean isVersion(BasicFileAttributes attributes) {
            return Objects.equals(fileKey, attributes.fileKey())
                    && modifiedNanos == attributes.lastModifiedTime().to(TimeUnit.NANOSECONDS)
                    && size == attributes.size();
        }
    }
}
