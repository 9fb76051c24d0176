package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

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
        if (bridge != null) {
            bridge.close();
        }
        if (host != null) {
            host.close();
        }
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

    private static void assertError(String path, int status, String message) throws Exception {
        WebClient.Reply reply = bridge.get(path);
        assertEquals(path, status, reply.status);
        assertEquals(path, message, Json.MAPPER.readTree(reply.body).get("error").asText());
    }
}
