package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.JsonNode;
import com.sparrowrecsys.online.datamanager.DataManager;
import com.sparrowrecsys.online.datamanager.Movie;
import com.sparrowrecsys.online.datamanager.User;
import com.sparrowrecsys.online.model.Embedding;
import com.sparrowrecsys.online.recprocess.RecForYouProcess;
import org.junit.BeforeClass;
import org.junit.Test;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

/** The Py4J entry point on the real fixture: one JSON answer per call, as the contract says. */
public class RecallEntryPointTest {
    private static final DataManager DATA = DataManager.getInstance();
    private static MissQueue misses;
    private static RecallEntryPoint entry;

    @BeforeClass
    public static void load() {
        Fixture.loadedWebRoot();
        misses = new MissQueue(10);
        entry = new RecallEntryPoint(misses, "emb");
    }

    @Test
    public void describesTheBridge() throws Exception {
        JsonNode info = json(entry.info());
        assertEquals("0.1.0", info.get("bridge").asText());
        assertEquals("0.10.9.9", info.get("py4j").asText());
        assertEquals(755, info.get("movies").asInt());
        assertEquals(json(entry.userIds()).size(), info.get("users").asInt());
    }

    @Test
    public void listsKnownUsersSorted() throws Exception {
        List<Integer> ids = ints(json(entry.userIds()));
        assertTrue(ids.size() > 500 && ids.size() <= 603);
        for (int i = 1; i < ids.size(); i++) {
            assertTrue(ids.get(i - 1) < ids.get(i));
        }
        ids.forEach(id -> assertTrue(DATA.getUserById(id) != null));
    }

    @Test
    public void hostCandidatesAreTheHostRanking() throws Exception {
        JsonNode answer = json(entry.candidates(1, "host", 20));
        assertEquals(1, answer.get("userId").asInt());
        assertTrue(answer.get("known").asBoolean());
        assertEquals("host", answer.get("source").asText());
        List<Integer> expected = RecForYouProcess.getRecList(1, 20, "emb").stream()
                .map(Movie::getMovieId).collect(Collectors.toList());
        assertEquals(expected, movieIds(answer));
        JsonNode row = answer.get("movies").get(0);
        Movie movie = DATA.getMovieById(expected.get(0));
        assertEquals(6, row.size());
        assertEquals(movie.getMovieId(), row.get(0).asInt());
        assertEquals(movie.getTitle(), row.get(1).asText());
        assertEquals(movie.getReleaseYear(), row.get(2).asInt());
        assertEquals(movie.getGenres().size(), row.get(3).size());
        assertEquals(movie.getGenres().get(0), row.get(3).get(0).asText());
        assertEquals(movie.getAverageRating(), row.get(4).asDouble(), 0);
        assertEquals(movie.getRatingNumber(), row.get(5).asInt());
    }

    @Test
    public void embeddingCandidatesAreMostSimilarFirst() throws Exception {
        List<Integer> ids = movieIds(json(entry.candidates(1, "embedding", 20)));
        assertEquals(20, ids.size());
        Embedding user = DATA.getUserById(1).getEmb();
        double best = DATA.getMovies(Integer.MAX_VALUE, "none").stream().filter(m -> m.getEmb() != null)
                .mapToDouble(m -> user.calculateSimilarity(m.getEmb())).max().getAsDouble();
        double previous = Double.POSITIVE_INFINITY;
        for (int id : ids) {
            double similarity = user.calculateSimilarity(DATA.getMovieById(id).getEmb());
            assertTrue("strictly non-increasing cosine", similarity <= previous);
            previous = similarity;
        }
        assertEquals(best, user.calculateSimilarity(DATA.getMovieById(ids.get(0)).getEmb()), 0);
    }

    @Test
    public void genreCandidatesComeFromTheLatestLikedGenres() throws Exception {
        List<Integer> ids = movieIds(json(entry.candidates(1, "genre", 20)));
        assertEquals(20, ids.size());
        assertEquals("no duplicates", 20, new HashSet<>(ids).size());
        Set<String> likedGenres = new HashSet<>();
        DATA.getUserById(1).getRatings().stream()
                .filter(r -> r.getScore() >= 3.5 && DATA.getMovieById(r.getMovieId()) != null)
                .sorted((a, b) -> Long.compare(b.getTimestamp(), a.getTimestamp()))
                .limit(5)
                .forEach(r -> likedGenres.addAll(DATA.getMovieById(r.getMovieId()).getGenres()));
        for (int id : ids) {
            assertTrue(id + " shares a liked genre",
                    DATA.getMovieById(id).getGenres().stream().anyMatch(likedGenres::contains));
        }
    }

    @Test
    public void unknownUsersAreNotKnown() throws Exception {
        for (String source : new String[]{"host", "genre", "embedding"}) {
            JsonNode answer = json(entry.candidates(999999, source, 10));
            assertFalse(answer.get("known").asBoolean());
            assertEquals(0, answer.get("movies").size());
        }
        JsonNode history = json(entry.history(999999));
        assertFalse(history.get("known").asBoolean());
        assertEquals(0, history.get("ratings").size());
    }

    @Test
    public void refusesBadArgumentsWithAClearMessage() {
        assertRefused(() -> entry.candidates(1, "random", 5), "unknown candidate source 'random': use host, genre or embedding");
        assertRefused(() -> entry.candidates(1, "host", -1), "size must be 0 or more, got -1");
        assertRefused(() -> entry.movies("1, 2", false), "idsJson must be a JSON array of integer ids, e.g. [1, 2], got: 1, 2");
        assertRefused(() -> entry.movies("[1, \"x\"]", false), "idsJson must hold integer ids only, got \"x\"");
        assertRefused(() -> entry.userBundles(null, "host", 5, false),
                "userIdsJson must be a JSON array of integer ids, e.g. [1, 2], got: null");
    }

    @Test
    public void historyIsSortedByTime() throws Exception {
        JsonNode history = json(entry.history(6));
        User user = DATA.getUserById(6);
        assertTrue(history.get("known").asBoolean());
        assertEquals(user.getRatingCount(), history.get("ratings").size());
        long previous = Long.MIN_VALUE;
        for (JsonNode rating : history.get("ratings")) {
            assertEquals(3, rating.size());
            assertTrue(rating.get(2).asLong() >= previous);
            previous = rating.get(2).asLong();
        }
        assertTrue("keeps ratings of movies that did not load", containsMovie(history.get("ratings"), 11));
    }

    @Test
    public void moviesSplitsLoadedFromMissing() throws Exception {
        JsonNode answer = json(entry.movies("[1, 11, 999999, 1]", true));
        assertEquals(1, answer.get("movies").size());
        JsonNode toyStory = answer.get("movies").get(0);
        assertEquals("Toy Story", toyStory.get(1).asText());
        assertEquals(10, toyStory.get(6).size());
        assertEquals("[11,999999]", answer.get("missing").toString());
        assertEquals("no emb unless asked", 6, json(entry.movies("[1]", false)).get("movies").get(0).size());
    }

    @Test
    public void bundlesUsersWithEachMovieOnce() throws Exception {
        JsonNode answer = json(entry.userBundles("[1, 999999, 6]", "genre", 5, false));
        assertEquals(3, answer.get("users").size());
        JsonNode unknown = answer.get("users").get(1);
        assertFalse(unknown.get("known").asBoolean());
        assertEquals(0, unknown.get("candidates").size());
        List<Integer> movieIds = movieIds(answer);
        assertEquals("each movie once", new HashSet<>(movieIds).size(), movieIds.size());
        for (JsonNode user : new JsonNode[]{answer.get("users").get(0), answer.get("users").get(2)}) {
            assertEquals(5, user.get("candidates").size());
            assertTrue(movieIds.containsAll(ints(user.get("candidates"))));
            assertEquals(DATA.getUserById(user.get("userId").asInt()).getRatingCount(), user.get("ratings").size());
        }
        assertEquals("no emb unless asked", 6, answer.get("movies").get(0).size());
    }

    @Test
    public void bundledHostCandidatesAreEachUsersHostRanking() throws Exception {
        JsonNode answer = json(entry.userBundles("[1, 6, 42, 999999, 603]", "host", 800, false));
        for (JsonNode user : answer.get("users")) {
            List<Integer> expected = RecForYouProcess.getRecList(user.get("userId").asInt(), 800, "emb").stream()
                    .map(Movie::getMovieId).collect(Collectors.toList());
            assertEquals(user.get("userId").asText(), expected, ints(user.get("candidates")));
        }
        JsonNode cut = json(entry.userBundles("[6]", "host", 7, false)).get("users").get(0);
        assertEquals(RecForYouProcess.getRecList(6, 7, "emb").stream().map(Movie::getMovieId)
                .collect(Collectors.toList()), ints(cut.get("candidates")));
    }

    @Test
    public void drainsTheMissQueue() throws Exception {
        misses.offer("llm", 1);
        misses.offer("llm", 2);
        assertEquals("[{\"model\":\"llm\",\"userId\":1}]", entry.takeMisses(1));
        assertEquals("[{\"model\":\"llm\",\"userId\":2}]", entry.takeMisses(10));
        assertEquals("[]", entry.takeMisses(10));
    }

    private static boolean containsMovie(JsonNode ratings, int movieId) {
        for (JsonNode rating : ratings) {
            if (rating.get(0).asInt() == movieId) {
                return true;
            }
        }
        return false;
    }

    private static void assertRefused(Runnable call, String message) {
        try {
            call.run();
            fail("accepted: " + message);
        } catch (IllegalArgumentException e) {
            assertEquals(message, e.getMessage());
        }
    }

    private static List<Integer> movieIds(JsonNode answer) {
        List<Integer> ids = new ArrayList<>();
        answer.get("movies").forEach(movie -> ids.add(movie.get(0).asInt()));
        return ids;
    }

    private static List<Integer> ints(JsonNode array) {
        List<Integer> ids = new ArrayList<>();
        array.forEach(id -> ids.add(id.asInt()));
        return ids;
    }

    static JsonNode json(String text) throws Exception {
        return Json.MAPPER.readTree(text);
    }
}
