package io.sparrowllm.bridge;

import org.junit.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Set;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

/** The launcher's settings: the contract's defaults, and clear refusals of a bad deploy. */
public class BridgeConfigTest {
    private static final Path WEB_ROOT = Paths.get("/srv/host/webroot");

    @Test
    public void refusesToStartWithoutAToken() {
        String message = refusal(new HashMap<>());
        assertTrue(message, message.contains("SPARROW_LLM_TOKEN") && message.contains("SPARROW_LLM_TOKEN_FILE"));
    }

    @Test
    public void hasTheContractDefaults() {
        BridgeConfig config = BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN", "t"), WEB_ROOT);
        assertEquals(6010, config.httpPort());
        assertEquals("t", config.token());
        assertEquals(0, config.gatewayPort());
        assertEquals(Paths.get(System.getProperty("user.home"), ".sparrow-llm", "private", "gateway.json").toAbsolutePath(),
                config.connectFile());
        assertEquals(BridgeConfig.StoreKind.FILE, config.storeKind());
        assertEquals(Paths.get(System.getProperty("user.home"), ".sparrow-llm").toAbsolutePath(), config.home());
        assertEquals(config.home().resolve("store"), config.storeDir());
        assertEquals(WEB_ROOT.resolve("modeldata/sparrow-llm"), config.legacyStoreDir());
        assertEquals("127.0.0.1", config.redisHost());
        assertEquals(6379, config.redisPort());
        assertNull(config.redisPassword());
        assertEquals(0, config.redisDb());
        assertEquals(300, config.redisTimeoutMs());
        assertEquals(1048576, config.maxRecordBytes());
        assertEquals(new LinkedHashSet<>(BridgeConfig.BUILT_IN_MODELS), config.pluginModels());
        assertTrue(config.models().isEmpty());
        assertEquals(config.pluginModels(), config.declaredModels());
        assertFalse(config.exitOnStdinEof());
        assertEquals(604800, config.maxAgeS());
        assertEquals("emb", config.fallbackModel());
        assertNull(config.abModel());
        assertEquals(0, config.abPercent());
        assertEquals(Collections.singleton("llm"), config.nearlineModels());
        assertEquals(1000, config.queueMax());
    }

    @Test
    public void readsEverySetting() {
        BridgeConfig config = BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN", " t ", "PORT", "7000",
                "SPARROW_LLM_GATEWAY_PORT", "25333", "SPARROW_LLM_CONNECT_FILE", "/run/gw.json",
                "SPARROW_LLM_STORE", "redis", "SPARROW_LLM_STORE_DIR", "/data/store",
                "SPARROW_LLM_REDIS_HOST", "redis.local", "SPARROW_LLM_REDIS_PORT", "6380",
                "SPARROW_LLM_REDIS_PASSWORD", "pw", "SPARROW_LLM_REDIS_DB", "3",
                "SPARROW_LLM_MODELS", " llm, recent ,,", "SPARROW_LLM_MAX_AGE_S", "0",
                "SPARROW_LLM_FALLBACK_MODEL", "nerualcf", "SPARROW_LLM_AB_MODEL", "llm", "SPARROW_LLM_AB_PERCENT", "25",
                "SPARROW_LLM_NEARLINE_MODELS", "", "SPARROW_LLM_QUEUE_MAX", "5", "SPARROW_LLM_HOME", "/opt/sllm",
                "SPARROW_LLM_REDIS_TIMEOUT_MS", "250", "SPARROW_LLM_MAX_RECORD_BYTES", "4096",
                "SPARROW_LLM_PLUGIN_MODELS", "recent,mine", "SPARROW_LLM_EXIT_ON_STDIN_EOF", "1"), WEB_ROOT);
        assertEquals(7000, config.httpPort());
        assertEquals("t", config.token());
        assertEquals(25333, config.gatewayPort());
        assertEquals(Paths.get("/run/gw.json"), config.connectFile());
        assertEquals(BridgeConfig.StoreKind.REDIS, config.storeKind());
        assertEquals(Paths.get("/data/store"), config.storeDir());
        assertEquals("redis.local", config.redisHost());
        assertEquals(6380, config.redisPort());
        assertEquals("pw", config.redisPassword());
        assertEquals(3, config.redisDb());
        assertEquals(new LinkedHashSet<>(Arrays.asList("llm", "recent")), config.models());
        assertEquals(0, config.maxAgeS());
        assertEquals("nerualcf", config.fallbackModel());
        assertEquals("llm", config.abModel());
        assertEquals(25, config.abPercent());
        assertTrue("an empty list means no nearline model", config.nearlineModels().isEmpty());
        assertEquals(5, config.queueMax());
        assertEquals(Paths.get("/opt/sllm"), config.home());
        assertEquals(250, config.redisTimeoutMs());
        assertEquals(4096, config.maxRecordBytes());
        assertEquals(new LinkedHashSet<>(Arrays.asList("recent", "mine")), config.pluginModels());
        assertTrue(config.exitOnStdinEof());
        assertEquals(new LinkedHashSet<>(Arrays.asList("recent", "mine", "llm")), config.declaredModels());
    }

    @Test
    public void ownsTheListedNearlineAndAbModels() {
        BridgeConfig config = BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_MODELS", "recent",
                "SPARROW_LLM_AB_MODEL", "ab", "SPARROW_LLM_AB_PERCENT", "5"), WEB_ROOT);
        Set<String> expected = new LinkedHashSet<>(BridgeConfig.BUILT_IN_MODELS);
        expected.add("ab");
        assertEquals(expected, config.declaredModels());
        BridgeConfig none = BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_PLUGIN_MODELS", "",
                "SPARROW_LLM_NEARLINE_MODELS", ""), WEB_ROOT);
        assertTrue("an empty SPARROW_LLM_PLUGIN_MODELS drops the built-in list", none.declaredModels().isEmpty());
    }

    @Test
    public void keepsTheFallbackModelOutOfTheBuiltInList() {
        BridgeConfig config = BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_FALLBACK_MODEL", "popularity"),
                WEB_ROOT);
        Set<String> expected = new LinkedHashSet<>(BridgeConfig.BUILT_IN_MODELS);
        expected.remove("popularity");
        assertEquals(expected, config.pluginModels());
    }

    @Test
    public void placesTheConnectFileAndTheStoreUnderSparrowLlmHome() {
        BridgeConfig config = BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_HOME", "~/sllm"),
                WEB_ROOT, "/home/u");
        assertEquals(Paths.get("/home/u/sllm"), config.home());
        assertEquals(Paths.get("/home/u/sllm/private"), config.privateDir());
        assertEquals(Paths.get("/home/u/sllm/private/gateway.json"), config.connectFile());
        assertEquals(Paths.get("/home/u/sllm/store"), config.storeDir());
        BridgeConfig unset = BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN", "t"), WEB_ROOT, "/home/u");
        assertEquals(Paths.get("/home/u/.sparrow-llm/store"), unset.storeDir());
        assertEquals(Paths.get("/home/u/.sparrow-llm/private/gateway.json"), unset.connectFile());
        BridgeConfig explicit = BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_HOME", "/h",
                "SPARROW_LLM_STORE_DIR", "~/data/../store", "SPARROW_LLM_CONNECT_FILE", "/run/gw.json"), WEB_ROOT, "/home/u");
        assertEquals(Paths.get("/home/u/store"), explicit.storeDir());
        assertEquals(Paths.get("/run/gw.json"), explicit.connectFile());
    }

    @Test
    public void refusesAPluginHomeInsideTheWebRoot() {
        assertEquals("SPARROW_LLM_HOME /srv/host/webroot/modeldata/llmhome is inside the host's web root /srv/host/webroot,"
                        + " which the host serves to anyone (the connect file holds the gateway token): move it outside",
                refusal(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_HOME", "/srv/host/webroot/modeldata/llmhome")));
        assertTrue(refusal(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_HOME", "/srv/host/webroot"))
                .startsWith("SPARROW_LLM_HOME /srv/host/webroot is inside the host's web root"));
        assertTrue("even with the store elsewhere", refusal(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_HOME",
                "/srv/host/webroot/x/../llm", "SPARROW_LLM_STORE_DIR", "/var/store"))
                .startsWith("SPARROW_LLM_HOME /srv/host/webroot/llm is inside the host's web root"));
        assertTrue(refusal(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_HOME", "/h",
                "SPARROW_LLM_CONNECT_FILE", "/srv/host/webroot/gw.json"))
                .startsWith("SPARROW_LLM_CONNECT_FILE /srv/host/webroot/gw.json is inside the host's web root"));
        // A home beside the web root, or one that holds it (the stand-in's composed web root), is fine.
        assertEquals(Paths.get("/srv/host/llm"), BridgeConfig.fromEnvironment(
                env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_HOME", "/srv/host/llm"), WEB_ROOT).home());
        assertEquals(Paths.get("/srv"), BridgeConfig.fromEnvironment(
                env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_HOME", "/srv"), WEB_ROOT).home());
    }

    @Test
    public void refusesAPluginHomeThatALinkPutsInsideTheWebRoot() throws Exception {
        Path root = Fixture.tempDir("linked").toRealPath();
        Path webRoot = Files.createDirectories(root.resolve("webroot"));
        Files.createDirectories(webRoot.resolve("modeldata/llmhome"));
        Path link = Files.createSymbolicLink(root.resolve("home-link"), webRoot.resolve("modeldata"));
        try {
            BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN", "t", "SPARROW_LLM_HOME", link.resolve("llmhome").toString()),
                    webRoot);
            fail("a home reached through a link into the web root was accepted");
        } catch (IllegalArgumentException e) {
            assertEquals("SPARROW_LLM_HOME " + link.resolve("llmhome") + " is inside the host's web root " + webRoot
                    + ", which the host serves to anyone (the connect file holds the gateway token): move it outside",
                    e.getMessage());
        }
    }

    @Test
    public void readsTheTokenFromAFile() throws Exception {
        Path file = Fixture.tempDir("token").resolve("token");
        Files.write(file, "s3cret\n".getBytes(StandardCharsets.UTF_8));
        assertEquals("s3cret", BridgeConfig.fromEnvironment(env("SPARROW_LLM_TOKEN_FILE", file.toString()), WEB_ROOT).token());

        assertTrue(refusal(env("SPARROW_LLM_TOKEN_FILE", file.toString(), "SPARROW_LLM_TOKEN", "x")).contains("not both"));
        Files.write(file, "\n".getBytes(StandardCharsets.UTF_8));
        assertTrue(refusal(env("SPARROW_LLM_TOKEN_FILE", file.toString())).contains("is empty"));
        assertTrue(refusal(env("SPARROW_LLM_TOKEN_FILE", file + ".missing")).contains("cannot read SPARROW_LLM_TOKEN_FILE"));
    }

    @Test
    public void namesTheVariableOfABadValue() {
        assertRefused("PORT must be an integer from 0 to 65535, got 'abc'", "PORT", "abc");
        assertRefused("SPARROW_LLM_GATEWAY_PORT must be an integer from 0 to 65535, got '70000'",
                "SPARROW_LLM_GATEWAY_PORT", "70000");
        assertRefused("SPARROW_LLM_AB_PERCENT must be an integer from 0 to 100, got '101'", "SPARROW_LLM_AB_PERCENT", "101");
        assertRefused("SPARROW_LLM_AB_PERCENT is 10 but SPARROW_LLM_AB_MODEL is not set", "SPARROW_LLM_AB_PERCENT", "10");
        assertRefused("SPARROW_LLM_STORE must be 'file' or 'redis', got 'mongo'", "SPARROW_LLM_STORE", "mongo");
        assertRefused("SPARROW_LLM_MODELS: 'Bad!' is not a model name ([a-z0-9_-]{1,32})", "SPARROW_LLM_MODELS", "llm,Bad!");
        assertRefused("SPARROW_LLM_MODELS: 'emb' is the fallback model (SPARROW_LLM_FALLBACK_MODEL) and cannot be a plugin model",
                "SPARROW_LLM_MODELS", "emb");
        assertRefused("SPARROW_LLM_QUEUE_MAX must be an integer from 1 to 10000000, got '0'", "SPARROW_LLM_QUEUE_MAX", "0");
        assertRefused("SPARROW_LLM_MAX_AGE_S must be an integer from 0 to 2147483647, got '-1'", "SPARROW_LLM_MAX_AGE_S", "-1");
        assertRefused("SPARROW_LLM_REDIS_TIMEOUT_MS must be an integer from 10 to 60000, got '0'", "SPARROW_LLM_REDIS_TIMEOUT_MS", "0");
        assertRefused("SPARROW_LLM_MAX_RECORD_BYTES must be an integer from 1024 to 268435456, got '1mb'",
                "SPARROW_LLM_MAX_RECORD_BYTES", "1mb");
        assertRefused("SPARROW_LLM_EXIT_ON_STDIN_EOF must be an integer from 0 to 1, got 'yes'", "SPARROW_LLM_EXIT_ON_STDIN_EOF", "yes");
        assertRefused("SPARROW_LLM_PLUGIN_MODELS: 'emb' is the fallback model (SPARROW_LLM_FALLBACK_MODEL) and cannot be a plugin model",
                "SPARROW_LLM_PLUGIN_MODELS", "recent,emb");
        assertRefused("SPARROW_LLM_STORE_DIR /srv/host holds the web root /srv/host/webroot: the store must not contain the host's web root",
                "SPARROW_LLM_STORE_DIR", "/srv/host");
    }

    private static void assertRefused(String expected, String name, String value) {
        assertEquals(expected, refusal(env("SPARROW_LLM_TOKEN", "t", name, value)));
    }

    private static String refusal(Map<String, String> env) {
        try {
            BridgeConfig.fromEnvironment(env, WEB_ROOT);
        } catch (IllegalArgumentException e) {
            assertFalse("a refusal never shows the token", e.getMessage().contains("s3cret"));
            return e.getMessage();
        }
        fail("accepted " + env);
        return null;
    }

    private static Map<String, String> env(String... pairs) {
        Map<String, String> env = new HashMap<>();
        for (int i = 0; i < pairs.length; i += 2) {
            env.put(pairs[i], pairs[i + 1]);
        }
        return env;
    }
}
