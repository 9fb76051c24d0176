package io.sparrowllm.bridge;

import org.junit.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

import static org.junit.Assert.assertEquals;

/** The connect file and its private folder are the owner's only (issue 18, case 1). */
public class ConnectFileTest {
    @Test
    public void theConnectFileLivesInAnOwnerOnlyFolder() throws Exception {
        Path home = Fixture.tempDir("home");
        BridgeConfig config = Fixture.config(home.resolve("store"), "SPARROW_LLM_HOME", home.toString());
        assertEquals(home.resolve("private/gateway.json"), config.connectFile());
        ConnectFile.makePrivate(config.privateDir());
        ConnectFile.write(config.connectFile(), "127.0.0.1", 1234, "t", 6010);
        assertEquals("rwx------", permissions(config.privateDir()));
        assertEquals("rw-------", permissions(config.connectFile()));

        Files.setPosixFilePermissions(config.privateDir(), PosixFilePermissions.fromString("rwxr-xr-x"));
        ConnectFile.makePrivate(config.privateDir());
        assertEquals("an existing private folder is made owner-only again", "rwx------", permissions(config.privateDir()));

        Path elsewhere = Fixture.tempDir("elsewhere").resolve("new/gw.json");
        ConnectFile.write(elsewhere, "127.0.0.1", 1234, "t", 6010);
        assertEquals("a folder the connect file needs is created owner-only", "rwx------", permissions(elsewhere.getParent()));
    }

    private static String permissions(Path path) throws Exception {
        return PosixFilePermissions.toString(Files.getPosixFilePermissions(path));
    }
}
