package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFileAttributeView;
import java.nio.file.attribute.PosixFilePermissions;

/**
 * The file that tells the Python client where the gateway listens and its token: owner-only, in a
 * folder created owner-only, and replaced atomically, so a client never reads half a file and no
 * other user reads the token.
 */
final class ConnectFile {
    private static final String OWNER_ONLY_FOLDER = "rwx------";

    private ConnectFile() {
    }

    /** Creates {@code dir} (and any missing folder above it) owner-only, and makes an existing one owner-only. */
    static void makePrivate(Path dir) throws IOException {
        if (!Files.isDirectory(dir)) {
            createPrivateDirectories(dir);
        }
        if (Files.getFileStore(dir).supportsFileAttributeView(PosixFileAttributeView.class)) {
            Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString(OWNER_ONLY_FOLDER));
        }
    }

    private static void createPrivateDirectories(Path dir) throws IOException {
        try {
            Files.createDirectories(dir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString(OWNER_ONLY_FOLDER)));
        } catch (UnsupportedOperationException noPosix) {
            Files.createDirectories(dir);
        }
    }

    static void write(Path file, String gatewayHost, int gatewayPort, String token, int httpPort) throws IOException {
        ObjectNode json = Json.MAPPER.createObjectNode();
        json.put("host", gatewayHost);
        json.put("port", gatewayPort);
        json.put("token", token);
        json.put("httpPort", httpPort);
        json.put("pid", pid());
        Path dir = file.getParent();
        if (!Files.isDirectory(dir)) {
            createPrivateDirectories(dir);
        }
        Path temp = Files.createTempFile(dir, "." + file.getFileName(), ".tmp");
        try {
            if (Files.getFileStore(dir).supportsFileAttributeView(PosixFileAttributeView.class)) {
                Files.setPosixFilePermissions(temp, PosixFilePermissions.fromString("rw-------"));
            }
            Files.write(temp, json.toString().getBytes(StandardCharsets.UTF_8));
            Files.move(temp, file, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(temp);
        }
    }

    static void delete(Path file) {
        try {
            Files.deleteIfExists(file);
        } catch (IOException e) {
            Log.warn("cannot delete the connect file " + file + ": " + e);
        }
    }

    /** The JVM's pid the Java 8 way ("pid@host"); ProcessHandle needs Java 9. */
    private static long pid() {
        String name = ManagementFactory.getRuntimeMXBean().getName();
        return Long.parseLong(name.substring(0, name.indexOf('@')));
    }
}
