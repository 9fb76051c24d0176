import pytest

from sparrow_llm.config import ConfigError, LLMSettings
from sparrow_llm.prompts import (PARSE_FALLBACK, PARSE_OK, PARSE_REPAIRED, PROMPT_VERSION, Prompts, Rated,
                                 movie_label, naive_rank_prompt, parse_ranking)

from .fake_glm import MOVIES, movie

HEAT, TOY, ALIEN, ALIEN3, CASINO = "Heat (1995)", "Toy Story (1995)", "Alien (1979)", "Alien 3 (1992)", "Casino (1995)"
LABELS = [HEAT, TOY, ALIEN, ALIEN3, CASINO]


def _history(n: int) -> list[Rated]:
    return [Rated(movie(1000 + i, f"Film {i}", 1990 + i % 20, "Drama", "Crime"), 1.0 + i % 9 / 2) for i in range(n)]


@pytest.fixture()
def prompts() -> Prompts:
    return Prompts.from_settings(LLMSettings(history_items=5))


# ---- rendering --------------------------------------------------------------------------------

def test_rank_prompt_is_compact_recent_and_indexed(prompts):
    candidates = [MOVIES[i] for i in (8, 10, 15)]
    request = prompts.rank_request(_history(12), candidates, "Loves crime dramas.", top_n=2)
    text = request.text
    # Only the 5 most recent rows, as `title (year) | genres | rating`.
    assert "Film 6 " not in text and "Film 7 (1997) | Drama,Crime | 4.5" in text and "Film 11 " in text
    assert "[0] Finding Nemo (2003) | Animation,Children,Comedy" in text
    assert "[2] Godfather, The (1972) | Crime,Drama" in text
    assert "Loves crime dramas." in text and "at most 2 candidates" in text and '"i"' in text
    # No movie ids anywhere, each title once.
    assert "15" not in text.replace("1995", "") and text.count("Finding Nemo") == 1
    assert request.version == PROMPT_VERSION and request.step == "rank"
    assert request.labels == ["Finding Nemo (2003)", "Alien (1979)", "Godfather, The (1972)"]
    assert [r.movie.title for r in request.history] == [f"Film {i}" for i in range(7, 12)]
    assert request.max_tokens >= 2 * 10  # room for two picks with reasons


def test_profile_prompt_lists_recent_history(prompts):
    request = prompts.profile_request(_history(8))
    assert request.step == "profile" and len(request.history) == 5
    assert "Film 3 (1993) | Drama,Crime | 2.5" in request.text and "Film 2 " not in request.text
    assert request.messages[0]["role"] == "user"


def test_prompts_dir_override(tmp_path):
    (tmp_path / "profile.v1.txt").write_text("P: $history")
    (tmp_path / "rank.v1.txt").write_text("R $top_n: $profile / $history / $candidates")
    prompts = Prompts.from_settings(LLMSettings(prompts_dir=tmp_path))
    request = prompts.rank_request(_history(1), [MOVIES[4]], "x", top_n=1)
    assert request.text == "R 1: x / Film 0 (1990) | Drama,Crime | 1 / [0] Heat (1995) | Action,Crime,Thriller"
    assert prompts.profile_request(_history(1)).text == "P: Film 0 (1990) | Drama,Crime | 1"


@pytest.mark.parametrize("text", ["Costs $5 per $history", "Hello $user: $history"])
def test_a_broken_template_fails_at_load(tmp_path, text):
    (tmp_path / "profile.v1.txt").write_text(text)
    (tmp_path / "rank.v1.txt").write_text("$candidates")
    with pytest.raises(ConfigError, match="profile.v1.txt is invalid"):
        Prompts(tmp_path)


def test_missing_template_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="SPARROW_LLM_PROMPTS_DIR") as err:
        Prompts(tmp_path)
    assert "profile.v1.txt" in str(err.value)


def test_naive_prompt_is_the_verbose_baseline(prompts):
    history, candidates = _history(50), [movie(2000 + i, f"Candidate {i}", 2001, "Comedy") for i in range(50)]
    compact = prompts.rank_request(history, candidates, "p", top_n=20).text
    naive = naive_rank_prompt(history, candidates, "p", top_n=20)[0]["content"]
    assert "Movie ID: 2049, Title: Candidate 49 (2001)" in naive and "full movie title" in naive
    # Same inputs; the compact prompt of 5 history rows is no bigger than a third of the naive one of 50.
    assert len(compact) < len(naive) / 3
    full = Prompts.from_settings(LLMSettings(history_items=50)).rank_request(history, candidates, "p", 20).text
    assert len(full) < 0.7 * len(naive)


def test_movie_label_without_year():
    assert movie_label(movie(1, "Untitled", 0)) == "Untitled"


# ---- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, indexes, reasons, status", [
    # exactly as asked
    ('[{"i": 2, "r": "classic sci-fi"}, {"i": 0, "r": "tense crime"}]', (2, 0), ("classic sci-fi", "tense crime"),
     PARSE_OK),
    ('[3, 1]', (3, 1), ("", ""), PARSE_OK),
    ('[{"index": 4, "reason": "crime epic"}]', (4,), ("crime epic",), PARSE_OK),
    ('[{"i": "2"}, {"i": 1.0}, {"i": "[0]"}]', (2, 1, 0), ("", "", ""), PARSE_OK),
    # in a code fence, or in prose
    ('```json\n[{"i": 1, "r": "fun"}]\n```', (1,), ("fun",), PARSE_REPAIRED),
    ('Sure! Here are my picks:\n[{"i": 4, "r": "gangsters"}, {"i": 2}]\nEnjoy!', (4, 2), ("gangsters", ""),
     PARSE_REPAIRED),
    ('{"ranking": [{"i": 0}, {"i": 1}]}', (0, 1), ("", ""), PARSE_REPAIRED),
    ('```\n[{"i": 3,},]\n```', (3,), ("",), PARSE_REPAIRED),  # trailing commas
    # hallucinated indexes and repeats are dropped, the order kept
    ('[{"i": 9, "r": "no such"}, {"i": 1, "r": "a"}, {"i": 1, "r": "again"}, {"i": -1}, {"i": 0}]', (1, 0),
     ("a", ""), PARSE_REPAIRED),
    ('[true, 2]', (2,), ("",), PARSE_REPAIRED),
    # loose or cut-off JSON (max_tokens hit mid-answer)
    ('[{"i": 1, "r": "fun"}, {"i": 2, "r": "sc', (1, 2), ("fun", ""), PARSE_REPAIRED),
    ("[{'i': 3, 'r': 'single quotes'}, {i: 4}]", (3, 4), ("single quotes", ""), PARSE_REPAIRED),
    # titles instead of indexes
    ('["Casino (1995)", "toy story", "Some Other Film"]', (4, 1), ("", ""), PARSE_REPAIRED),
    ('[{"title": "Heat"}]', (0,), ("",), PARSE_OK),
    # free text: titles (the naive prompt's answer), `[i]` labels, `i.` numbers
    ('Here are my recommendations:\n1. **Casino (1995)** - a crime epic\n2. Heat (1995): as tense as Alien\n'
     '3. Heat again', (4, 0), ("a crime epic", "as tense as Alien"), PARSE_REPAIRED),
    ('- [2] Alien | Horror\n- [0] - tense', (2, 0), ("Horror", "tense"), PARSE_REPAIRED),
    ('3. the third one\n1) the second', (3, 1), ("the third one", "the second"), PARSE_REPAIRED),
    ('Alien 3 (1992) is better than Alien (1979)', (3,), ("is better than Alien (1979)",), PARSE_REPAIRED),
    # nothing usable
    ("", (), (), PARSE_FALLBACK),
    ("   \n", (), (), PARSE_FALLBACK),
    (None, (), (), PARSE_FALLBACK),
    ("I'm sorry, I can't recommend movies.", (), (), PARSE_FALLBACK),
    ("[]", (), (), PARSE_FALLBACK),
    ('[{"i": 17}, {"i": 42}]', (), (), PARSE_FALLBACK),
    ('{"error": "bad"}', (), (), PARSE_FALLBACK),
    ("[" * 3000 + "]" * 3000, (), (), PARSE_FALLBACK),  # deeper than json's recursion limit
])
def test_parse_ranking(answer, indexes, reasons, status):
    parsed = parse_ranking(answer, LABELS)
    assert (parsed.indexes, parsed.reasons, parsed.status) == (indexes, reasons, status)


def test_parse_ranking_skips_a_title_two_candidates_share():
    labels = ["Hamlet (1990)", "Hamlet (1996)", "Heat (1995)"]
    assert parse_ranking("Hamlet\nHeat", labels).indexes == (2,)
    assert parse_ranking("Hamlet (1996)", labels).indexes == (1,)


def test_parse_ranking_cuts_long_reasons():
    parsed = parse_ranking('[{"i": 0, "r": "' + "very  long " * 30 + '"}]', LABELS)
    assert len(parsed.reasons[0]) == 80 and "  " not in parsed.reasons[0]
