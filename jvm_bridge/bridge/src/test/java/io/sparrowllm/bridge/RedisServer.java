package io.sparrowllm.bridge;

import redis.clients.jedis.Jedis;
import redis.clients.jedis.exceptions.JedisConnectionException;

import java.io.File;
import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

/**
 * A real redis-server for the tests, on a free loopback port, with a password, nothing saved. It
 * can be killed, paused (SIGSTOP), resumed (SIGCONT) and restarted on the same port. A missing
 * redis-server fails the test: the Redis store is part of what the suite proves.
 */
final class RedisServer implements AutoCloseable {
    static final String PASSWORD = "redis-test-pw";

    private final String binary;
    private final int port;
    private final Path dir;
    private Process process;
    private long pid;
    private boolean paused;

    private RedisServer(String binary, int port, Path dir) {
        this.binary = binary;
        this.port = port;
        this.dir = dir;
    }

    /** Starts a fresh redis-server, or fails the test naming what is missing. */
    static RedisServer start() throws Exception {
        RedisServer server = new RedisServer(findBinary(), freePort(), Fixture.tempDir("redis"));
        server.startProcess();
        return server;
    }

    int port() {
        return port;
    }

    /** A client on db {@code db}, authenticated. */
    Jedis client(int db) {
        Jedis jedis = new Jedis("127.0.0.1", port, 2000);
        jedis.auth(PASSWORD);
        jedis.select(db);
        return jedis;
    }

    /** SIGKILL: the server is gone at once, its connections reset. */
    void kill() throws Exception {
        resume();
        process.destroyForcibly();
        assertTrue("redis-server did not die", process.waitFor(10, TimeUnit.SECONDS));
    }

    /** SIGSTOP: the port still accepts connections, nothing is answered. */
    void pause() throws Exception {
        signal("-STOP");
        paused = true;
    }

    /** SIGCONT. */
    void resume() throws Exception {
        if (paused) {
            signal("-CONT");
            paused = false;
        }
    }

    /** Kills the server and starts a new, empty one on the same port. */
    void restart() throws Exception {
        kill();
        startProcess();
    }

    @Override
    public void close() throws Exception {
        if (process != null && process.isAlive()) {
            resume();
            process.destroy();
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        }
    }

    private void startProcess() throws Exception {
        process = new ProcessBuilder(binary, "--port", String.valueOf(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--requirepass", PASSWORD, "--dir", dir.toString())
                .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.appendTo(dir.resolve("redis.log").toFile()))
                .start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            try (Jedis jedis = client(0)) {
                jedis.ping();
                // Process.pid() is Java 9+; the server tells its own.
                String info = jedis.info("server");
                pid = Long.parseLong(info.replaceAll("(?s).*process_id:(\\d+).*", "$1"));
                return;
            } catch (JedisConnectionException e) {
                if (System.nanoTime() > deadline || !process.isAlive()) {
                    throw new IllegalStateException("redis-server did not come up on port " + port + " (log: "
                            + dir.resolve("redis.log") + ")", e);
                }
                Thread.sleep(20);
            }
        }
    }

    private void signal(String signal) throws Exception {
        Process kill = new ProcessBuilder("kill", signal, String.valueOf(pid)).inheritIO().start();
        assertTrue(kill.waitFor(10, TimeUnit.SECONDS) && kill.exitValue() == 0);
    }

    private static String findBinary() {
        String path = System.getenv("PATH");
        if (path != null) {
            for (String folder : path.split(File.pathSeparator)) {
                File candidate = new File(folder, "redis-server");
                if (candidate.canExecute()) {
                    return candidate.getPath();
                }
            }
        }
        for (String candidate : new String[]{"/usr/bin/redis-server", "/usr/local/bin/redis-server"}) {
            if (new File(candidate).canExecute()) {
                return candidate;
            }
        }
        fail("redis-server is not installed (not on PATH, not in /usr/bin or /usr/local/bin): the Redis store tests"
                + " need it (Debian: apt-get install redis-server)");
        return null;
    }

    static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        }
    }
}
