package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

/** The read-only comparison page and its JSON, over real HTTP. */
public class CompareServletTest {
    private static WebClient.Running host;
    private static WebClient.Running bridge;

    @BeforeClass
    public static void start() throws Exception {
        Path store = Fixture.tempDir("store");
        long now = System.currentTimeMillis();
        Fixture.writeRecord(store, "recent", 1, now, 260, 858, 296);
        Fixture.writeRecord(store, "old", 1, now - 30L * 24 * 3600 * 1000, 2);
        Fixture.writeRecord(store, "recent", 2, now, 1);
        Fixture.writeFile(store.resolve("profiles/1.json"), "{\"text\": \"Likes space operas.\"}");
        host = WebClient.host();
        bridge = WebClient.bridge(Fixture.config(store));
    }

    @AfterClass
    public static void stop() throws Exception {
        WebClient.close(bridge, host);
    }

    @Test
    public void comparesTheHostWithEveryStoredModel() throws Exception {
        WebClient.Reply reply = bridge.get("/sparrow-llm/api/compare?id=1&size=5");
        assertEquals(200, reply.status);
        JsonNode answer = Json.MAPPER.readTree(reply.body);
        assertEquals(1, answer.get("userId").asInt());
        assertEquals("emb", answer.get("host").get("model").asText());
        assertEquals(Json.MAPPER.readTree(host.get("/getrecforyou?id=1&size=5&model=emb").body), answer.get("host").get("movies"));

        assertEquals(2, answer.get("models").size());
        JsonNode old = answer.get("models").get(0);
        assertEquals("old", old.get("model").asText());
        assertTrue(old.get("stale").asBoolean());
        JsonNode recent = answer.get("models").get(1);
        assertEquals("recent", recent.get("model").asText());
        assertEquals("test", recent.get("backend").asText());
        assertEquals("recent-v1", recent.get("version").asText());
        assertFalse(recent.get("stale").asBoolean());
        assertTrue(recent.get("createdAt").isIntegralNumber());
        JsonNode items = recent.get("items");
        assertEquals(3, items.size());
        assertEquals(Json.MAPPER.readTree(host.get("/getmovie?id=260").body), items.get(0).get("movie"));
        assertEquals("because 0", items.get(0).get("reason").asText());
        assertEquals(1.0, items.get(0).get("score").asDouble(), 0);
        assertTrue("a movie that did not load", items.get(1).get("movie").isNull());
        assertEquals("Likes space operas.", answer.get("profile").get("text").asText());

        assertTrue(Json.MAPPER.readTree(bridge.get("/sparrow-llm/api/compare?id=2").body).get("profile").isNull());
        assertEquals(12, Json.MAPPER.readTree(bridge.get("/sparrow-llm/api/compare?id=3").body).get("host").get("movies").size());
    }

    @Test
    public void answersBadRequestsWithAStatusAndAMessage() throws Exception {
        assertError("/sparrow-llm/api/compare?id=abc", 400, "id must be an integer user id");
        assertError("/sparrow-llm/api/compare", 400, "id must be an integer user id");
        assertError("/sparrow-llm/api/compare?id=1&size=0", 400, "size must be an integer from 1 to 800");
        assertError("/sparrow-llm/api/compare?id=999999", 404, "unknown user 999999");
    }

    @Test
    public void servesTheStaticPageReadOnly() throws Exception {
        WebClient.Reply page = bridge.get("/sparrow-llm/compare.html");
        assertEquals(200, page.status);
        assertTrue(page.contentType, page.contentType.startsWith("text/html"));
        assertTrue(page.body.contains("id=\"user-form\"") && page.body.contains("compare.js"));
        assertEquals(200, bridge.get("/sparrow-llm/compare.js").status);
        assertEquals(200, bridge.get("/sparrow-llm/compare.css").status);
        assertEquals(404, bridge.get("/sparrow-llm/nothing.html").status);
        assertEquals("the host's own files still come from its web root", 200, bridge.get("/index.html").status);
    }

    @Test
    public void recordErrorsAreFixedTextsWithoutPathsOrContent() throws Exception {
        Path dir = Fixture.tempDir("store");
        long now = System.currentTimeMillis();
        Fixture.writeRecord(dir, "recent", 7, now, 260);
        Fixture.writeFile(dir.resolve("records/llm/7.json"), "SECRETWORD is not JSON");
        Fixture.writeFile(dir.resolve("records/popularity/7.json"), Fixture.deepJson(200_000, false));
        Fixture.mkfifo(dir.resolve("records/ease/7.json"));
        Files.createDirectories(dir.resolve("records/sasrec"));
        Files.createSymbolicLink(dir.resolve("records/sasrec/7.json"), dir.resolve("records/recent/7.json"));
        Fixture.writeRecord(dir, "clickprompt", 7, now + 3600_000L, 260);
        Fixture.writeFile(dir.resolve("records/custom/7.json"), Fixture.recordJson("custom", 7, now, 1)
                .replace("\"movieId\":1", "\"movieId\":\"SECRETWORD\""));
        Fixture.writeFile(dir.resolve("profiles/7.json"), Fixture.deepJson(200_000, true));
        try (WebClient.Running page = WebClient.bridge(Fixture.config(dir)); LogCapture log = new LogCapture()) {
            WebClient.Reply reply = page.get("/sparrow-llm/api/compare?id=7&size=3");
            assertEquals(200, reply.status);
            JsonNode answer = Json.MAPPER.readTree(reply.body);
            String[][] expected = {
                    {"clickprompt", "record createdAt is in the future"}, {"custom", "record invalid"},
                    {"ease", "record is not a regular file"}, {"llm", "record invalid"},
                    {"popularity", "record nested too deeply"}, {"recent", null}, {"sasrec", "record is not a regular file"},
            };
            assertEquals(reply.body, expected.length, answer.get("models").size());
            for (int i = 0; i < expected.length; i++) {
                JsonNode model = answer.get("models").get(i);
                assertEquals(expected[i][0], model.get("model").asText());
                if (expected[i][1] == null) {
                    assertEquals(260, model.get("items").get(0).get("movieId").asInt());
                } else {
                    assertEquals(expected[i][0], expected[i][1], model.get("error").asText());
                    assertEquals("model and error only", 2, model.size());
                }
            }
            assertTrue("a hostile profile is left out", answer.get("profile").isNull());
            assertFalse(reply.body, reply.body.contains("SECRETWORD") || reply.body.contains(dir.toString())
                    || reply.body.contains("/records/") || reply.body.contains(".json"));
            log.assertNoStackTrace();
        }
    }

    @Test
    public void aStoreFolderReplacedByAFileGivesFixedTextsWithoutPaths() throws Exception {
        Path dir = Fixture.tempDir("store");
        Fixture.writeRecord(dir, "recent", 1, System.currentTimeMillis(), 260);
        try (WebClient.Running page = WebClient.bridge(Fixture.config(dir)); LogCapture log = new LogCapture()) {
            Files.move(dir.resolve("records"), dir.resolve("gone"));
            Files.write(dir.resolve("records"), "a file".getBytes(StandardCharsets.UTF_8));
            WebClient.Reply reply = page.get("/sparrow-llm/api/compare?id=1&size=3");
            assertEquals(200, reply.status);
            JsonNode answer = Json.MAPPER.readTree(reply.body);
            assertEquals(3, answer.get("host").get("movies").size());
            for (JsonNode model : answer.get("models")) {
                assertEquals(model.toString(), "record unreadable", model.get("error").asText());
            }
            assertFalse(reply.body, reply.body.contains(dir.toString()) || reply.body.contains("records"));
            log.assertNoStackTrace();
        }
    }

    private static void assertError(String path, int status, String message) throws Exception {
        WebClient.Reply reply = bridge.get(path);
        assertEquals(path, status, reply.status);
        assertEquals(path, message, Json.MAPPER.readTree(reply.body).get("error").asText());
    }
}
