package com.sparrowrecsys.online.datamanager;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.BeforeClass;
import org.junit.Test;

import java.io.File;
import java.util.List;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

/** The stand-in loads the shared fixture with the host's documented quirks and counts. */
public class DataManagerTest {
    private static final DataManager DATA = DataManager.getInstance();

    @BeforeClass
    public static void loadFixture() {
        String fixture = System.getProperty("sparrow.fixture", "");
        File webRoot = new File(fixture);
        assertTrue("the SparrowRecsys fixture is missing: expected a webroot folder at '" + fixture
                + "' (shared/sparrowrecsys/webroot beside the repository)", webRoot.isDirectory());
        String base = webRoot.getPath() + File.separator;
        DATA.loadData(base + "sampledata/movies.csv", base + "sampledata/links.csv", base + "sampledata/ratings.csv",
                base + "modeldata/item2vecEmb.csv", base + "modeldata/userEmb.csv", "i2vEmb", "uEmb");
    }

    @Test
    public void loadsTheFixtureCountsOfTheHost() {
        List<Movie> movies = DATA.getMovies(Integer.MAX_VALUE, "none");
        assertEquals(755, movies.size());
        assertEquals(675, movies.stream().filter(m -> m.getEmb() != null).count());
        int ratings = 0;
        int userEmbs = 0;
        for (int userId = 1; userId <= 1000; userId++) {
            User user = DATA.getUserById(userId);
            if (user != null) {
                ratings += user.getRatingCount();
                userEmbs += user.getEmb() == null ? 0 : 1;
            }
        }
        assertEquals(21667, ratings);
        assertEquals(603, userEmbs);
    }

    @Test
    public void keepsTheHostQuirks() {
        assertNull("a quoted title with a comma does not load", DATA.getMovieById(11));
        assertNull("a link row ending in an empty tmdbId is skipped", DATA.getMovieById(142).getTmdbId());
        assertEquals("Toy Story", DATA.getMovieById(1).getTitle());
        assertEquals(1995, DATA.getMovieById(1).getReleaseYear());
        assertTrue("users keep ratings of movies that did not load",
                DATA.getUserById(6).getRatings().stream().anyMatch(r -> r.getMovieId() == 11));
    }

    @Test
    public void writesMovieJsonLikeTheHost() throws Exception {
        JsonNode json = new ObjectMapper().readTree(new ObjectMapper().writeValueAsString(DATA.getMovieById(1)));
        assertFalse(json.has("emb") || json.has("ratings") || json.has("movieFeatures"));
        assertEquals(10, json.get("topRatings").size());
        assertNotNull(json.get("topRatings").get(0).get("rating").get("score"));
        assertEquals(5.0, json.get("topRatings").get(0).get("rating").get("score").asDouble(), 0);
    }

    @Test
    public void sortsByRatingDescending() {
        List<Movie> top = DATA.getMovies(800, "rating");
        for (int i = 1; i < top.size(); i++) {
            assertTrue(top.get(i - 1).getAverageRating() >= top.get(i).getAverageRating());
        }
    }
}
