package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.HashMap;
import java.util.Map;

import static org.junit.Assert.assertTrue;

/**
 * The shared SparrowRecsys fixture as a host deploy sees it: a throwaway folder under target/
 * holding {@code webroot/} with a tiny index.html, symlinks to the fixture's sampledata, posters
 * and two model files, and a real modeldata/ folder the store can write under. Loaded into the
 * stand-in's DataManager once per test JVM. Nothing here deletes through the symlinks.
 */
final class Fixture {
    static final String TOKEN = "test-token-not-secret";
    private static Path classpathRoot;
    private static boolean loaded;

    private Fixture() {
    }

    /** The folder that holds webroot/: what a deploy puts on the classpath. */
    static synchronized Path classpathRoot() {
        if (classpathRoot == null) {
            classpathRoot = buildWebRoot();
        }
        return classpathRoot;
    }

    static Path webRoot() {
        return classpathRoot().resolve("webroot");
    }

    /** Loads the fixture into the host's DataManager, once per JVM (the host has no reload). */
    static synchronized Path loadedWebRoot() {
        if (!loaded) {
            BridgeLauncher.loadHostData(webRoot());
            loaded = true;
        }
        return webRoot();
    }

    static Path tempDir(String prefix) {
        try {
            Path target = Paths.get("target");
            Files.createDirectories(target);
            return Files.createTempDirectory(target.toAbsolutePath(), prefix);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The environment of a deploy on a free port, with a token and its own store folder, plus {@code overrides}. */
    static Map<String, String> env(Path storeDir, String... overrides) {
        Map<String, String> env = new HashMap<>();
        env.put("PORT", "0");
        env.put("SPARROW_LLM_TOKEN", TOKEN);
        env.put("SPARROW_LLM_STORE_DIR", storeDir.toString());
        for (int i = 0; i < overrides.length; i += 2) {
            env.put(overrides[i], overrides[i + 1]);
        }
        return env;
    }

    static BridgeConfig config(Path storeDir, String... overrides) {
        return BridgeConfig.fromEnvironment(env(storeDir, overrides), webRoot());
    }

    /** A record as the Python side writes it: JSON in a temp file renamed over the target. */
    static void writeRecord(Path storeDir, String model, int userId, long createdAt, int... movieIds) {
        writeFile(storeDir.resolve("records").resolve(model).resolve(userId + ".json"),
                recordJson(model, userId, createdAt, movieIds));
    }

    static String recordJson(String model, int userId, long createdAt, int... movieIds) {
        ObjectNode record = Json.MAPPER.createObjectNode();
        record.put("model", model);
        record.put("userId", userId);
        record.put("backend", "test");
        record.put("version", model + "-v1");
        record.put("createdAt", createdAt);
        ArrayNode items = record.putArray("items");
        for (int i = 0; i < movieIds.length; i++) {
            items.addObject().put("movieId", movieIds[i]).put("score", 1.0 - i / 100.0).put("reason", "because " + i);
        }
        record.putObject("meta").put("parsed", true);
        return record.toString();
    }

    static void writeFile(Path file, String content) {
        try {
            Files.createDirectories(file.getParent());
            Path temp = Files.createTempFile(file.getParent(), ".write", ".tmp");
            Files.write(temp, content.getBytes(StandardCharsets.UTF_8));
            Files.move(temp, file, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A named pipe at {@code file} (nobody ever writes to it: opening it for reading would block). */
    static void mkfifo(Path file) {
        try {
            Files.createDirectories(file.getParent());
            Process mkfifo = new ProcessBuilder("mkfifo", file.toString()).inheritIO().start();
            assertTrue("mkfifo " + file, mkfifo.waitFor() == 0);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    /** {@code depth} nested arrays (or objects), valid JSON: what a recursive parser cannot survive. */
    static String deepJson(int depth, boolean objects) {
        StringBuilder json = new StringBuilder(depth * (objects ? 5 : 2));
        for (int i = 0; i < depth; i++) {
            json.append(objects ? "{\"\":" : "[");
        }
        json.append(objects ? "1" : "");
        for (int i = 0; i < depth; i++) {
            json.append(objects ? '}' : ']');
        }
        return json.toString();
    }

    private static Path buildWebRoot() {
        String location = System.getProperty("sparrow.fixture", "");
        Path fixture = Paths.get(location).toAbsolutePath().normalize();
        assertTrue("the SparrowRecsys fixture is missing: expected a webroot folder at '" + fixture
                        + "' (shared/sparrowrecsys/webroot beside the repository; set -Dsparrow.fixture=...)",
                !location.isEmpty() && Files.isDirectory(fixture.resolve("sampledata")));
        try {
            Path root = tempDir("tmp");
            Path webRoot = root.resolve("webroot");
            Files.createDirectories(webRoot.resolve("modeldata"));
            Files.write(webRoot.resolve("index.html"),
                    "<!DOCTYPE html><title>test web root</title>\n".getBytes(StandardCharsets.UTF_8));
            Files.createSymbolicLink(webRoot.resolve("sampledata"), fixture.resolve("sampledata"));
            Files.createSymbolicLink(webRoot.resolve("posters"), fixture.resolve("posters"));
            for (String model : new String[]{"item2vecEmb.csv", "userEmb.csv"}) {
                Files.createSymbolicLink(webRoot.resolve("modeldata").resolve(model),
                        fixture.resolve("modeldata").resolve(model));
            }
            return root;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot build the test web root", e);
        }
    }
}
