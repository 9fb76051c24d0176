package io.sparrowllm.bridge;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The launcher's settings, read once from the environment and validated up front, so a bad
 * deploy fails at start with a clear message and nothing else reads the environment.
 */
final class BridgeConfig {
    /** The names a plugin model may have (the store uses them as folder names and key parts). */
    static final Pattern MODEL_NAME = Pattern.compile("[a-z0-9_-]{1,32}");

    /**
     * The model names the Python side registers: plugin-owned whatever the store holds (so a store
     * outage still gives them the host fallback with our header). {@code SPARROW_LLM_PLUGIN_MODELS}
     * replaces this list.
     */
    static final List<String> BUILT_IN_MODELS = Collections.unmodifiableList(
            Arrays.asList("recent", "llm", "clickprompt", "popularity", "ease", "ease-recent", "sasrec", "ltr",
                    "llm-ltr"));
    static final int DEFAULT_REDIS_TIMEOUT_MS = 300;
    static final int DEFAULT_MAX_RECORD_BYTES = 1024 * 1024;
    /**
     * The owner-only folder under the home that holds the connect file (its token) and the host's log
     * (the Python side, {@code schema.PRIVATE_SUBDIR}, names it the same).
     */
    static final String PRIVATE_DIR = "private";

    enum StoreKind { FILE, REDIS }

    private final int httpPort;
    private final Path home;
    private final Path webRoot;
    private final String token;
    private final int gatewayPort;
    private final Path connectFile;
    private final StoreKind storeKind;
    private final Path storeDir;
    private final String redisHost;
    private final int redisPort;
    private final String redisPassword;
    private final int redisDb;
    private final int redisTimeoutMs;
    private final int maxRecordBytes;
    private final Set<String> pluginModels;
    private final Set<String> models;
    private final long maxAgeS;
    private final String fallbackModel;
    private final String abModel;
    private final int abPercent;
    private final Set<String> nearlineModels;
    private final Set<String> declaredModels;
    private final int queueMax;
    private final boolean exitOnStdinEof;

    private BridgeConfig(Map<String, String> env, Path webRoot, String userHome) {
        httpPort = intIn(env, "PORT", 6010, 0, 65535);
        this.webRoot = webRoot.toAbsolutePath().normalize();
        String homeDir = value(env, "SPARROW_LLM_HOME");
        home = (homeDir == null ? Paths.get(userHome, ".sparrow-llm") : path(homeDir, userHome)).toAbsolutePath().normalize();
        token = token(env);
        gatewayPort = intIn(env, "SPARROW_LLM_GATEWAY_PORT", 0, 0, 65535);
        String connect = value(env, "SPARROW_LLM_CONNECT_FILE");
        connectFile = (connect == null ? privateDir().resolve("gateway.json") : path(connect, userHome)).toAbsolutePath();
        refuseInsideTheWebRoot("SPARROW_LLM_HOME", home);
        refuseInsideTheWebRoot("SPARROW_LLM_CONNECT_FILE", connectFile);
        storeKind = storeKind(env);
        String dir = value(env, "SPARROW_LLM_STORE_DIR");
        storeDir = (dir == null ? home.resolve("store") : path(dir, userHome)).toAbsolutePath().normalize();
        if (storeKind == StoreKind.FILE && this.webRoot.startsWith(storeDir)) {
            throw new IllegalArgumentException("SPARROW_LLM_STORE_DIR " + storeDir + " holds the web root "
                    + this.webRoot + ": the store must not contain the host's web root");
        }
        redisHost = orDefault(value(env, "SPARROW_LLM_REDIS_HOST"), "127.0.0.1");
        redisPort = intIn(env, "SPARROW_LLM_REDIS_PORT", 6379, 1, 65535);
        redisPassword = value(env, "SPARROW_LLM_REDIS_PASSWORD");
        redisDb = intIn(env, "SPARROW_LLM_REDIS_DB", 0, 0, Integer.MAX_VALUE);
        redisTimeoutMs = intIn(env, "SPARROW_LLM_REDIS_TIMEOUT_MS", DEFAULT_REDIS_TIMEOUT_MS, 10, 60_000);
        maxRecordBytes = intIn(env, "SPARROW_LLM_MAX_RECORD_BYTES", DEFAULT_MAX_RECORD_BYTES, 1024, 256 * 1024 * 1024);
        fallbackModel = orDefault(value(env, "SPARROW_LLM_FALLBACK_MODEL"), "emb");
        pluginModels = pluginModels(env);
        models = modelNames(env, "SPARROW_LLM_MODELS", "");
        maxAgeS = intIn(env, "SPARROW_LLM_MAX_AGE_S", 604800, 0, Integer.MAX_VALUE);
        abPercent = intIn(env, "SPARROW_LLM_AB_PERCENT", 0, 0, 100);
        abModel = abModel(env);
        nearlineModels = modelNames(env, "SPARROW_LLM_NEARLINE_MODELS", "llm");
        Set<String> declared = new LinkedHashSet<>(pluginModels);
        declared.addAll(models);
        declared.addAll(nearlineModels);
        if (abModel != null) {
            declared.add(abModel);
        }
        declaredModels = Collections.unmodifiableSet(declared);
        queueMax = intIn(env, "SPARROW_LLM_QUEUE_MAX", 1000, 1, 10_000_000);
        exitOnStdinEof = intIn(env, "SPARROW_LLM_EXIT_ON_STDIN_EOF", 0, 0, 1) == 1;
    }

    /**
     * Reads and checks every setting of the contract's table.
     *
     * @throws IllegalArgumentException naming the variable and what is wrong with it
     */
    static BridgeConfig fromEnvironment(Map<String, String> env, Path webRoot) {
        return fromEnvironment(env, webRoot, System.getProperty("user.home"));
    }

    /** As {@link #fromEnvironment(Map, Path)}, with the user's home given. */
    static BridgeConfig fromEnvironment(Map<String, String> env, Path webRoot, String userHome) {
        return new BridgeConfig(env, webRoot, userHome);
    }

    int httpPort() {
        return httpPort;
    }

    String token() {
        return token;
    }

    /** {@code SPARROW_LLM_HOME}: the plugin's own folder (connect file, default store). */
    Path home() {
        return home;
    }

    /** {@code <home>/private}: owner-only, the default folder of the connect file (and of the Python side's host log). */
    Path privateDir() {
        return home.resolve(PRIVATE_DIR);
    }

    /** The host's web root (absolute, normalized). */
    Path webRoot() {
        return webRoot;
    }

    /** Where the file store was by default before it moved to {@code <home>/store}: never read, never served. */
    Path legacyStoreDir() {
        return webRoot.resolve("modeldata").resolve("sparrow-llm");
    }

    int gatewayPort() {
        return gatewayPort;
    }

    Path connectFile() {
        return connectFile;
    }

    StoreKind storeKind() {
        return storeKind;
    }

    Path storeDir() {
        return storeDir;
    }

    String redisHost() {
        return redisHost;
    }

    int redisPort() {
        return redisPort;
    }

    /** Null when Redis has no password. */
    String redisPassword() {
        return redisPassword;
    }

    int redisDb() {
        return redisDb;
    }

    /** Connect and socket timeout of the bridge's Redis connections, also its wait for a pooled one. */
    int redisTimeoutMs() {
        return redisTimeoutMs;
    }

    /** A stored record or profile larger than this is not read. */
    int maxRecordBytes() {
        return maxRecordBytes;
    }

    /** The plugin's model names ({@link #BUILT_IN_MODELS} unless SPARROW_LLM_PLUGIN_MODELS is set). */
    Set<String> pluginModels() {
        return pluginModels;
    }

    /** The models listed in SPARROW_LLM_MODELS (plugin-owned in addition to the others). */
    Set<String> models() {
        return models;
    }

    /** Records older than this are not served; 0 means no limit. */
    long maxAgeS() {
        return maxAgeS;
    }

    String fallbackModel() {
        return fallbackModel;
    }

    /** Null when there is no A/B split. */
    String abModel() {
        return abModel;
    }

    int abPercent() {
        return abPercent;
    }

    Set<String> nearlineModels() {
        return nearlineModels;
    }

    /**
     * The models the plugin owns whatever the store holds: the plugin's own names, the listed,
     * nearline and A/B models (a nearline model must own its misses before the worker has written
     * anything, and every one of them must fall back with our header while the store is down).
     */
    Set<String> declaredModels() {
        return declaredModels;
    }

    int queueMax() {
        return queueMax;
    }

    /** Whether the launcher exits when its standard input reaches end of file (its parent is gone). */
    boolean exitOnStdinEof() {
        return exitOnStdinEof;
    }

    /**
     * The host serves everything under its web root to anyone, following links: the plugin's home (its
     * connect file holds the gateway token, its log the host's output) and the connect file must be elsewhere.
     * Checked as written and with links resolved (as far as the path exists).
     */
    private void refuseInsideTheWebRoot(String variable, Path path) {
        Path realWebRoot = resolved(webRoot);
        if (path.startsWith(webRoot) || resolved(path).startsWith(realWebRoot)) {
            throw new IllegalArgumentException(variable + " " + path + " is inside the host's web root " + webRoot
                    + ", which the host serves to anyone (the connect file holds the gateway token): move it outside");
        }
    }

    /** The path with the links of its longest existing prefix resolved (the rest appended as written). */
    static Path resolved(Path path) {
        Path absolute = path.toAbsolutePath().normalize();
        for (Path prefix = absolute; prefix != null; prefix = prefix.getParent()) {
            try {
                return prefix.toRealPath().resolve(prefix.relativize(absolute));
            } catch (IOException | SecurityException e) {
                // not there (or not readable): try the folder above
            }
        }
        return absolute;
    }

    private static String token(Map<String, String> env) {
        String token = value(env, "SPARROW_LLM_TOKEN");
        String file = value(env, "SPARROW_LLM_TOKEN_FILE");
        if (token != null && file != null) {
            throw new IllegalArgumentException("set SPARROW_LLM_TOKEN or SPARROW_LLM_TOKEN_FILE, not both");
        }
        if (file != null) {
            try {
                token = new String(Files.readAllBytes(Paths.get(file)), StandardCharsets.UTF_8).trim();
            } catch (IOException e) {
                throw new IllegalArgumentException("cannot read SPARROW_LLM_TOKEN_FILE " + file + ": " + e, e);
            }
            if (token.isEmpty()) {
                throw new IllegalArgumentException("SPARROW_LLM_TOKEN_FILE " + file + " is empty");
            }
        }
        if (token == null) {
            throw new IllegalArgumentException("no gateway token: set SPARROW_LLM_TOKEN or SPARROW_LLM_TOKEN_FILE"
                    + " (the Py4J gateway does not run without authentication)");
        }
        return token;
    }

    private static StoreKind storeKind(Map<String, String> env) {
        String kind = orDefault(value(env, "SPARROW_LLM_STORE"), "file");
        try {
            return StoreKind.valueOf(kind.toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("SPARROW_LLM_STORE must be 'file' or 'redis', got '" + kind + "'", e);
        }
    }

    private Set<String> modelNames(Map<String, String> env, String name, String unset) {
        String raw = env.containsKey(name) ? env.get(name) : unset;
        Set<String> names = new LinkedHashSet<>();
        for (String part : raw.split(",")) {
            String model = part.trim();
            if (model.isEmpty()) {
                continue;
            }
            checkPluginModel(name, model);
            names.add(model);
        }
        return Collections.unmodifiableSet(names);
    }

    /** SPARROW_LLM_PLUGIN_MODELS, or the built-in list less the fallback model (the host's ranker is never ours). */
    private Set<String> pluginModels(Map<String, String> env) {
        if (env.containsKey("SPARROW_LLM_PLUGIN_MODELS")) {
            return modelNames(env, "SPARROW_LLM_PLUGIN_MODELS", "");
        }
        Set<String> names = new LinkedHashSet<>(BUILT_IN_MODELS);
        names.remove(fallbackModel);
        return Collections.unmodifiableSet(names);
    }

    private String abModel(Map<String, String> env) {
        String model = value(env, "SPARROW_LLM_AB_MODEL");
        if (abPercent > 0 && model == null) {
            throw new IllegalArgumentException("SPARROW_LLM_AB_PERCENT is " + abPercent + " but SPARROW_LLM_AB_MODEL is not set");
        }
        if (model != null) {
            checkPluginModel("SPARROW_LLM_AB_MODEL", model);
        }
        return model;
    }

    /** The fallback model is the host's own ranker: a plugin model of that name could never fall back. */
    private void checkPluginModel(String variable, String model) {
        if (!MODEL_NAME.matcher(model).matches()) {
            throw new IllegalArgumentException(variable + ": '" + model + "' is not a model name ("
                    + MODEL_NAME.pattern() + ")");
        }
        if (model.equals(fallbackModel)) {
            throw new IllegalArgumentException(variable + ": '" + model
                    + "' is the fallback model (SPARROW_LLM_FALLBACK_MODEL) and cannot be a plugin model");
        }
    }

    private static int intIn(Map<String, String> env, String name, int unset, int min, int max) {
        String raw = value(env, name);
        if (raw == null) {
            return unset;
        }
        try {
            int value = Integer.parseInt(raw);
            if (value >= min && value <= max) {
                return value;
            }
        } catch (NumberFormatException e) {
            // reported below with the allowed range
        }
        throw new IllegalArgumentException(name + " must be an integer from " + min + " to " + max + ", got '" + raw + "'");
    }

    /** A path as the Python side reads one: a leading {@code ~} is the user's home. */
    private static Path path(String raw, String userHome) {
        if (raw.equals("~")) {
            return Paths.get(userHome);
        }
        if (raw.startsWith("~/")) {
            return Paths.get(userHome, raw.substring(2));
        }
        return Paths.get(raw);
    }

    /** A set, non-blank value, trimmed; null otherwise. */
    private static String value(Map<String, String> env, String name) {
        String raw = env.get(name);
        return raw == null || raw.trim().isEmpty() ? null : raw.trim();
    }

    private static String orDefault(String value, String unset) {
        return value == null ? unset : value;
    }
}
