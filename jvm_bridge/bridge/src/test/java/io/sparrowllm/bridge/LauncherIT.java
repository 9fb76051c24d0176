package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.AfterClass;
import org.junit.Assume;
import org.junit.BeforeClass;
import org.junit.Test;
import py4j.Protocol;
import py4j.commands.AuthCommand;
import py4j.commands.CallCommand;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;

/**
 * The launcher end to end, as a deploy runs it: a separate JVM with the classpath
 * {@code <folder holding webroot/>:<stand-in jar-with-dependencies, carrying py4j 0.10.7>:<shaded bridge jar>}.
 * Runs in the package phase, once the shaded jar exists.
 */
public class LauncherIT {
    private static final String TOKEN = "it-" + Long.toHexString(System.nanoTime());
    private static Path work;
    private static Path connectFile;
    private static Path home;
    private static Process launcher;
    private static JsonNode connect;

    @BeforeClass
    public static void startLauncher() throws Exception {
        work = Fixture.tempDir("launcher");
        connectFile = work.resolve("connect/gw.json");
        home = work.resolve("home");
        // The store at its default, <SPARROW_LLM_HOME>/store; a leftover at the old default in the web root.
        Fixture.writeRecord(home.resolve("store"), "recent", 1, System.currentTimeMillis(), 260, 296);
        Fixture.writeRecord(Fixture.webRoot().resolve("modeldata/sparrow-llm"), "recent", 1,
                System.currentTimeMillis(), 1, 2);
        launcher = launch("launcher", "SPARROW_LLM_TOKEN", TOKEN, "SPARROW_LLM_CONNECT_FILE", connectFile.toString(),
                "SPARROW_LLM_HOME", home.toString());
        // Not opted in: the end of its input means nothing to this launcher.
        launcher.getOutputStream().close();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!Files.exists(connectFile) || !read("stdout").contains("sparrow-llm bridge ready")) {
            assertTrue("the launcher exited early:\n" + read("stderr"), launcher.isAlive());
            assertTrue("no connect file after 60 s:\n" + read("stderr"), System.nanoTime() < deadline);
            Thread.sleep(100);
        }
        connect = Json.MAPPER.readTree(connectFile.toFile());
    }

    @AfterClass
    public static void stopLauncherAndCheckCleanup() throws Exception {
        if (launcher == null) {
            return;
        }
        launcher.destroy();
        assertTrue("the launcher did not stop on SIGTERM", launcher.waitFor(30, TimeUnit.SECONDS));
        assertFalse("the shutdown hook deletes the connect file", Files.exists(connectFile));
    }

    @Test
    public void writesAPrivateConnectFileAndAReadyLine() throws Exception {
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(connectFile)));
        assertEquals("127.0.0.1", connect.get("host").asText());
        assertEquals(TOKEN, connect.get("token").asText());
        assertTrue(connect.get("pid").asLong() > 0);
        int port = connect.get("port").asInt();
        int httpPort = connect.get("httpPort").asInt();
        assertTrue(port > 0 && httpPort > 0);
        String stdout = read("stdout");
        assertTrue(stdout, stdout.contains("RecSys Server has started."));
        assertTrue(stdout, stdout.contains("sparrow-llm bridge ready: http=" + httpPort + " gateway=127.0.0.1:" + port
                + " connect-file=" + connectFile));
        assertFalse("the token is never logged", stdout.contains(TOKEN) || read("stderr").contains(TOKEN));
    }

    @Test
    public void servesTheHostTheStageAndThePage() throws Exception {
        String base = "http://127.0.0.1:" + connect.get("httpPort").asInt();
        WebClient.Reply host = WebClient.get(base + "/getrecforyou?id=1&size=5&model=emb");
        assertEquals(200, host.status);
        assertEquals(5, RerankServletTest.ids(host.body).size());
        WebClient.Reply stage = WebClient.get(base + "/getrecforyou?id=1&size=5&model=recent");
        assertEquals("recent; source=store", stage.pluginHeader);
        assertEquals(Arrays.asList(260, 296), RerankServletTest.ids(stage.body).subList(0, 2));
        assertEquals(200, WebClient.get(base + "/sparrow-llm/compare.html").status);
        JsonNode compare = Json.MAPPER.readTree(WebClient.get(base + "/sparrow-llm/api/compare?id=1").body);
        assertEquals("recent", compare.get("models").get(0).get("model").asText());
    }

    @Test
    public void warnsOnceAboutTheOldDefaultStoreAndNeverServesIt() throws Exception {
        String stderr = read("stderr");
        int warnings = 0;
        for (String line : stderr.split("\n")) {
            if (line.contains("old default folder")) {
                warnings++;
                assertTrue(line, line.startsWith("sparrow-llm: found store records at the old default folder "
                        + Fixture.webRoot().resolve("modeldata/sparrow-llm")) && line.endsWith("any sparrow-llm command moves them"));
            }
        }
        assertEquals(stderr, 1, warnings);
        String base = "http://127.0.0.1:" + connect.get("httpPort").asInt();
        assertEquals(404, WebClient.get(base + "/modeldata/sparrow-llm/records/recent/1.json").status);
        assertEquals(404, WebClient.get(base + "/modeldata/sparrow-llm/").status);
        assertEquals("served from the new default, not the old folder", Arrays.asList(260, 296),
                RerankServletTest.ids(WebClient.get(base + "/getrecforyou?id=1&size=2&model=recent").body));
        assertTrue("a closed stdin does not stop a launcher that did not opt in", launcher.isAlive());
    }

    @Test
    public void exitsWhenItsParentClosesStdinIfAskedTo() throws Exception {
        Path watchedConnect = work.resolve("watched/gw.json");
        Process watched = launch("watched", "SPARROW_LLM_TOKEN", TOKEN, "SPARROW_LLM_CONNECT_FILE", watchedConnect.toString(),
                "SPARROW_LLM_HOME", home.toString(), "SPARROW_LLM_EXIT_ON_STDIN_EOF", "1");
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (!Files.exists(watchedConnect)) {
                assertTrue("the watched launcher exited early", watched.isAlive());
                assertTrue("no connect file after 60 s", System.nanoTime() < deadline);
                Thread.sleep(100);
            }
            watched.getOutputStream().write("ignored\n".getBytes(StandardCharsets.UTF_8));
            watched.getOutputStream().flush();
            Thread.sleep(200);
            assertTrue("input that is not the end changes nothing", watched.isAlive());
            watched.getOutputStream().close();
            assertTrue("the launcher did not exit after its stdin closed", watched.waitFor(30, TimeUnit.SECONDS));
            assertEquals(0, watched.exitValue());
            assertFalse("the shutdown hook deleted the connect file", Files.exists(watchedConnect));
            String stderr = new String(Files.readAllBytes(work.resolve("watched.stderr")), StandardCharsets.UTF_8);
            assertTrue(stderr, stderr.contains("sparrow-llm: standard input closed (SPARROW_LLM_EXIT_ON_STDIN_EOF=1)"));
        } finally {
            watched.destroyForcibly();
        }
    }

    @Test
    public void gatewayRefusesAWrongTokenAndAnswersTheRightOne() throws Throwable {
        List<String> refused = talk("wrong-" + TOKEN);
        assertNotEquals("a wrong token is not accepted", Protocol.getOutputVoidCommand().trim(), refused.get(0));
        assertTrue("and the connection is not served: " + refused, refused.get(1) == null || !refused.get(1).startsWith("!ys"));

        List<String> answered = talk(TOKEN);
        assertEquals(Protocol.getOutputVoidCommand().trim(), answered.get(0));
        String reply = answered.get(1);
        assertEquals("a return message", Protocol.RETURN_MESSAGE, reply.charAt(0));
        JsonNode info = Json.MAPPER.readTree((String) Protocol.getReturnValue(reply.substring(1), null));
        assertEquals("our relocated py4j, not the host's 0.10.7", "0.10.9.9", info.get("py4j").asText());
        assertEquals(755, info.get("movies").asInt());
    }

    @Test
    public void pythonClientCallsTheEntryPoint() throws Exception {
        Assume.assumeTrue("python3 with py4j is not installed: skipping the Python client check",
                run("python3", "-c", "import py4j") == 0);
        String script = "import json, sys\n"
                + "from py4j.java_gateway import JavaGateway, GatewayParameters\n"
                + "c = json.load(open(sys.argv[1]))\n"
                + "g = JavaGateway(gateway_parameters=GatewayParameters(port=c['port'], auth_token=c['token'], auto_convert=True))\n"
                + "e = g.entry_point\n"
                + "info = json.loads(e.info())\n"
                + "cands = json.loads(e.candidates(1, 'embedding', 5))\n"
                + "bundles = json.loads(e.userBundles('[1, 2]', 'genre', 3, True))\n"
                + "try:\n"
                + "    e.candidates(1, 'nope', 5)\n"
                + "    err = None\n"
                + "except Exception as ex:\n"
                + "    err = str(ex)\n"
                + "print(json.dumps({'py4j': info['py4j'], 'movies': info['movies'], 'cands': len(cands['movies']),"
                + " 'bundles': len(bundles['users']), 'err': 'unknown candidate source' in (err or '')}))\n"
                + "g.close()\n";
        Path out = work.resolve("python.out");
        Process python = new ProcessBuilder("python3", "-c", script, connectFile.toString())
                .redirectErrorStream(true).redirectOutput(out.toFile()).start();
        assertTrue(python.waitFor(60, TimeUnit.SECONDS));
        String printed = new String(Files.readAllBytes(out), StandardCharsets.UTF_8);
        assertEquals(printed, 0, python.exitValue());
        JsonNode result = Json.MAPPER.readTree(printed.trim().substring(printed.trim().lastIndexOf('\n') + 1));
        assertEquals("0.10.9.9", result.get("py4j").asText());
        assertEquals(755, result.get("movies").asInt());
        assertEquals(5, result.get("cands").asInt());
        assertEquals(2, result.get("bundles").asInt());
        assertTrue("a bad source reaches Python as an error with our message", result.get("err").asBoolean());
    }

    @Test
    public void refusesToStartWithoutAToken() throws Exception {
        Process refused = launch("refused", "SPARROW_LLM_CONNECT_FILE", work.resolve("never.json").toString());
        assertTrue(refused.waitFor(60, TimeUnit.SECONDS));
        assertEquals(2, refused.exitValue());
        String stderr = new String(Files.readAllBytes(work.resolve("refused.stderr")), StandardCharsets.UTF_8);
        assertTrue(stderr, stderr.startsWith("sparrow-llm: no gateway token: set SPARROW_LLM_TOKEN or SPARROW_LLM_TOKEN_FILE"));
        assertFalse(Files.exists(work.resolve("never.json")));
    }

    @Test
    public void refusesAPluginHomeInsideTheWebRootWithOneLine() throws Exception {
        Path inside = Fixture.webRoot().resolve("modeldata/llmhome");
        Process refused = launch("home-in-webroot", "SPARROW_LLM_TOKEN", TOKEN, "SPARROW_LLM_HOME", inside.toString());
        assertTrue(refused.waitFor(60, TimeUnit.SECONDS));
        assertEquals(2, refused.exitValue());
        List<String> stderr = Files.readAllLines(work.resolve("home-in-webroot.stderr"), StandardCharsets.UTF_8);
        assertEquals(Arrays.asList("sparrow-llm: SPARROW_LLM_HOME " + inside + " is inside the host's web root "
                + Fixture.webRoot() + ", which the host serves to anyone (the connect file holds the gateway token):"
                + " move it outside"), stderr);
        assertFalse("nothing written there", Files.exists(inside));
    }

    /** One py4j conversation on a raw socket, as the Python client has it: authenticate, then call entry_point.info(). */
    private static List<String> talk(String token) throws IOException {
        try (Socket socket = new Socket("127.0.0.1", connect.get("port").asInt())) {
            socket.setSoTimeout(10000);
            Writer out = new OutputStreamWriter(socket.getOutputStream(), StandardCharsets.UTF_8);
            BufferedReader in = new BufferedReader(new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
            out.write(AuthCommand.COMMAND_NAME + "\n" + token + "\n");
            out.flush();
            String auth = in.readLine();
            String call;
            try {
                out.write(CallCommand.CALL_COMMAND_NAME + "\n" + Protocol.ENTRY_POINT_OBJECT_ID + "\ninfo\n" + Protocol.END + "\n");
                out.flush();
                call = in.readLine();
            } catch (IOException closed) {
                call = null;
            }
            return Arrays.asList(auth, call);
        }
    }

    /** Starts the launcher with the deploy's classpath; its output goes to {@code <name>.stdout/.stderr}. */
    private static Process launch(String name, String... env) throws IOException {
        String bridgeJar = existing("bridge.jar");
        String standinJar = existing("standin.jar");
        String classpath = Fixture.classpathRoot() + File.pathSeparator + standinJar + File.pathSeparator + bridgeJar;
        ProcessBuilder builder = new ProcessBuilder(Paths.get(System.getProperty("java.home"), "bin", "java").toString(),
                "-Dorg.eclipse.jetty.LEVEL=WARN", "-cp", classpath, "io.sparrowllm.bridge.BridgeLauncher")
                .redirectOutput(work.resolve(name + ".stdout").toFile())
                .redirectError(work.resolve(name + ".stderr").toFile());
        Map<String, String> environment = builder.environment();
        environment.keySet().removeIf(key -> key.startsWith("SPARROW_LLM_"));
        environment.put("PORT", "0");
        environment.put("SPARROW_LLM_GATEWAY_PORT", "0");
        for (int i = 0; i < env.length; i += 2) {
            environment.put(env[i], env[i + 1]);
        }
        return builder.start();
    }

    private static String existing(String property) {
        String path = System.getProperty(property, "");
        assertTrue("-D" + property + " must name a built jar, got '" + path + "' (run `mvn package` from jvm_bridge/)",
                !path.isEmpty() && Files.isRegularFile(Paths.get(path)));
        return path;
    }

    private static String read(String stream) throws IOException {
        Path file = work.resolve("launcher." + stream);
        return Files.exists(file) ? new String(Files.readAllBytes(file), StandardCharsets.UTF_8) : "";
    }

    private static int run(String... command) throws Exception {
        try {
            Process process = new ProcessBuilder(command).redirectErrorStream(true)
                    .redirectOutput(work.resolve("probe.out").toFile()).start();
            return process.waitFor(30, TimeUnit.SECONDS) ? process.exitValue() : -1;
        } catch (IOException notInstalled) {
            return -1;
        }
    }
}
