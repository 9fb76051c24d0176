import dataclasses
import hashlib
import json
import shutil
import logging
import re
import threading
import time

import pytest

from sparrow_llm.domain import Rated, UserHistory, UserRating
from sparrow_llm.config import LLMSettings, Settings
from sparrow_llm.rankers.llm.base import make_backend
from sparrow_llm.rankers.llm.local_minilm import LocalMiniLMBackend
from sparrow_llm.rankers.llm.zhipu import ZhipuBackend
from sparrow_llm.rankers.palr.ranker import PalrRanker, cache_key, from_settings, history_hash, write_profile
from sparrow_llm.rankers.palr.prompts import Prompts
from sparrow_llm.rankers.palr.reasons import PROFILE_RULE, data_profile
from sparrow_llm.rankers.base import Ranker
from sparrow_llm.registry import make_ranker
from sparrow_llm.domain import Record
from sparrow_llm.store import FileStore

from tests.fake_glm import (CRIME_FAN, KIDS_FAN, MOVIES, Reply, context, fake_glm,  # noqa: F401
                       glm_settings)

# True of KIDS_FAN (user 1's history in these tests), so write_profile keeps it.
PROFILE = "Likes: Animation, Children\nDislikes: Horror\nEras: 1990s\nLoved: Toy Story and Aladdin"


def _candidate_ids(body: dict) -> dict[int, int]:
    """Index -> movie id of the candidates a rank prompt showed (read back from its labels)."""
    text = body["messages"][0]["content"]
    by_label = {f"{m.title} ({m.release_year})": m.movie_id for m in MOVIES.values()}
    return {int(i): by_label[label] for i, label in re.findall(r"^#(\d+) (.+?)\|", text, re.MULTILINE)}


def _is_rank(body: dict) -> bool:
    return "\nCandidates (" in body["messages"][0]["content"]


def _reasons_answer(body: dict) -> Reply | None:
    """The reasons prompt's answer `["<first genre>, why <title>", ...]` (true: the pick's own genre), one per pick
    it shows; None for another prompt."""
    text = body["messages"][0]["content"]
    if not text.startswith("Explain movie picks"):
        return None
    picks = text.split("in order:\n")[1].split("\nFor each pick")[0].splitlines()
    return Reply(content=json.dumps([f"{line.split('|')[1].split()[0]}, why {line.split('|')[0]}" for line in picks]),
                 usage=(200, 5 * len(picks)))


def answer_preferring(*movie_ids: int, wrap=lambda s: s, extra=()):
    """A scripted GLM: profiles get PROFILE; rankings pick `movie_ids` by their index in the prompt, as pairs;
    reasons are `<genre>, why <title>`."""
    def reply(body: dict) -> Reply:
        if (reasons := _reasons_answer(body)) is not None:
            return reasons
        if not _is_rank(body):
            return Reply(content=PROFILE, usage=(100, 12))
        index = {m: i for i, m in _candidate_ids(body).items()}
        picks = [[index[m], f"pick {m}"] for m in movie_ids if m in index] + list(extra)
        return Reply(content=wrap(json.dumps(picks)), usage=(300, 30))
    return reply


@pytest.fixture()
def store(tmp_path):
    return FileStore(tmp_path / "store", fsync=False)


@pytest.fixture()
def ranker(glm_settings, store):
    """Ranking only: no reasons call (the reasons tests below make them)."""
    return PalrRanker(ZhipuBackend(glm_settings, backoff_s=0.01), Prompts.from_settings(glm_settings), store, reasons=0)


def _ids(ranking):
    return [item.movie_id for item in ranking.items]


def test_satisfies_the_ranker_protocol(ranker):
    assert isinstance(ranker, PalrRanker)
    for attr in Ranker.__annotations__:
        assert hasattr(ranker, attr)
    assert (ranker.name, ranker.candidate_source, ranker.needs_emb) == ("llm", "host", False)
    assert (ranker.backend, ranker.version) == ("zhipuai:glm-4-flash", "palr-v2")


def test_llm_order_first_then_the_host_order(fake_glm, ranker):
    fake_glm.default = answer_preferring(14, 8)
    ranking = ranker.rank(context(1))
    # 7 is rated by the user: never shown, never served.
    assert _ids(ranking) == [14, 8, 13, 10, 11, 15]
    # The model's reasons name nothing the data confirms ("pick 14"): a different data reason for each movie.
    reasons = [i.reason for i in ranking.items]
    assert not {"pick 14", "pick 8"} & set(reasons) and all(reasons)
    # A reason repeats only where nothing else is true: these kids' movies of the 1990s, as rated here.
    assert {r for r in reasons if reasons.count(r) > 1} == {"rated 3.5 by 100 people here"}
    scores = [i.score for i in ranking.items]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores) and scores[0] == 1.0
    # Real latency of the two calls (the fake server answers in milliseconds), and no reason replaced.
    assert 0 < ranking.meta["llm_ms"] < 5000
    assert ranking.meta == {"parse": "ok", "llm_calls": 2, "cache": "miss", "prompt_tokens": 400,
                            "completion_tokens": 42, "llm_ms": ranking.meta["llm_ms"], "reasons_model": 0,
                            "reasons_replaced": 2}
    profile_body, rank_body = fake_glm.requests
    assert "\n5: Toy Story (1995)|Animation Children Comedy; Aladdin (1992)|" in profile_body["messages"][0]["content"]
    assert "\n5: Toy Story (1995); Aladdin (1992)\n4.5: Lion King, The (1994)\n" in rank_body["messages"][0]["content"]
    assert PROFILE in rank_body["messages"][0]["content"]
    assert 7 not in _candidate_ids(rank_body).values()
    Record("llm", 1, ranking.items, ranker.backend, ranker.version, meta=ranking.meta)  # a valid record


def test_a_stored_profile_saves_the_profile_call(fake_glm, ranker):
    fake_glm.default = answer_preferring(8)
    ranking = ranker.rank(context(1, profile="Stored: adores Pixar."))
    assert fake_glm.calls == 1 and ranking.meta["llm_calls"] == 1
    assert "Stored: adores Pixar." in fake_glm.requests[0]["messages"][0]["content"]


def test_only_k_candidates_are_shown(fake_glm, glm_settings, store):
    fake_glm.default = answer_preferring(15, 8)  # 15 is past the window: the LLM cannot pick it
    ranker = PalrRanker(make_backend(glm_settings), Prompts.from_settings(glm_settings), store, k=3, top_n=2)
    ranking = ranker.rank(context(1, profile=PROFILE))
    assert _candidate_ids(fake_glm.requests[0]) == {0: 13, 1: 10, 2: 8}
    assert "at most 2 candidates" in fake_glm.requests[0]["messages"][0]["content"]
    assert _ids(ranking) == [8, 13, 10, 11, 14, 15] and ranking.meta["parse"] == "ok"


def test_rerun_with_nothing_changed_makes_no_llm_call(fake_glm, glm_settings, store):
    fake_glm.default = answer_preferring(11, 8)
    users = [context(1), context(2, CRIME_FAN)]
    first = PalrRanker(make_backend(glm_settings), Prompts.from_settings(glm_settings), store).rank_many(users)
    calls = fake_glm.calls
    assert calls == 6  # each user: its profile, its ranking, its reasons
    assert all(r.meta["reasons_model"] == 6 for r in first)  # "<genre>, why <title>": true, one per movie
    again = PalrRanker(make_backend(glm_settings), Prompts.from_settings(glm_settings), store).rank_many(users)
    assert fake_glm.calls == calls
    assert [r.items for r in again] == [r.items for r in first]
    assert again[0].meta == {**first[0].meta, "llm_calls": 0, "cache": "hit", "llm_ms": 0}  # no call, no time
    # A new history is a new prompt: a miss for that user only.
    changed = context(1, KIDS_FAN + ((5, 4.0),))
    PalrRanker(make_backend(glm_settings), Prompts.from_settings(glm_settings), store).rank_many([changed, users[1]])
    assert fake_glm.calls == calls + 3


def test_cache_key_is_content_addressed(glm_settings):
    prompts = Prompts.from_settings(glm_settings)
    backend = make_backend(glm_settings)
    request = prompts.profile_request([])
    key = cache_key(backend, request)
    assert re.fullmatch(r"[0-9a-f]{64}", key) and key == cache_key(backend, prompts.profile_request([]))
    other_model = make_backend(dataclasses.replace(glm_settings, model="glm-4-plus"))
    assert cache_key(other_model, request) != key
    assert request.version == "v2" and cache_key(backend, dataclasses.replace(request, version="v1")) != key


@pytest.mark.parametrize("wrap, extra, parse", [
    (lambda s: f"Sure! Here you go:\n```json\n{s}\n```\nEnjoy.", (), "repaired"),
    (lambda s: s, ([99, "made up"], [0, "again"], [0]), "repaired"),
    # The objects the v1 prompt asked for still read as they are.
    (lambda s: json.dumps([{"i": i, "r": r} for i, r in json.loads(s)]), (), "ok"),
])
def test_ugly_answers_are_repaired(fake_glm, ranker, wrap, extra, parse):
    fake_glm.default = answer_preferring(8, wrap=wrap, extra=extra)
    ranking = ranker.rank(context(1, profile=PROFILE))
    ids = _ids(ranking)
    assert ranking.meta["parse"] == parse and ids[0] == 8 and len(ids) == len(set(ids)) == 6
    assert set(ids) == {13, 10, 8, 11, 14, 15}


def test_an_empty_answer_keeps_the_host_order(fake_glm, ranker):
    fake_glm.default = Reply(content="")
    ranking = ranker.rank(context(1, profile=PROFILE))
    assert _ids(ranking) == [13, 10, 8, 11, 14, 15] and ranking.meta["parse"] == "fallback"
    reasons = [i.reason for i in ranking.items]  # the host's order, served with data reasons
    assert all(reasons) and {r for r in reasons if reasons.count(r) > 1} == {"rated 3.5 by 100 people here"}
    assert ranking.meta["reasons_model"] == 0


def test_server_errors_fall_back_to_the_host_order(fake_glm, ranker):
    fake_glm.default = Reply(status=503)
    rankings = ranker.rank_many([context(1, profile=PROFILE), context(2, CRIME_FAN, profile=PROFILE)])
    assert [_ids(r) for r in rankings] == [[13, 10, 8, 11, 14, 15], [7, 10, 8, 11, 14, 15]]
    assert all(r.meta["parse"] == "fallback" and r.meta["error"] == "LLMUnavailable" for r in rankings)
    assert all(r.meta["cache"] == "miss" and r.meta["llm_calls"] == 1 for r in rankings)
    assert fake_glm.calls == 2 * 3  # each user: one try and two retries
    assert ranker.llm.counters.snapshot()["failures"] == 2


def test_a_slow_answer_times_out_to_the_host_order(fake_glm, glm_settings, store):
    fake_glm.default = Reply(content="[]", delay_s=1.5)
    settings = dataclasses.replace(glm_settings, timeout_s=0.2, max_retries=0)
    ranker = PalrRanker(make_backend(settings), Prompts.from_settings(settings), store)
    started = time.monotonic()
    ranking = ranker.rank(context(1, profile=PROFILE))
    assert time.monotonic() - started < 1.0
    assert ranking.meta["error"] == "LLMTimeout" and _ids(ranking) == [13, 10, 8, 11, 14, 15]


def test_a_bad_key_falls_back_without_leaking_it(fake_glm, glm_settings, store, caplog):
    secret = "sk-bad.SECRET-000111"
    caplog.set_level(logging.DEBUG)
    settings = dataclasses.replace(glm_settings, api_key=secret)
    ranking = PalrRanker(make_backend(settings), Prompts.from_settings(settings), store).rank(context(1))
    assert ranking.meta["parse"] == "fallback" and ranking.meta["error"] == "LLMAuthError"
    assert "ZHIPUAI_API_KEY" in caplog.text and secret not in caplog.text


def test_an_open_breaker_serves_the_host_order_without_calls(fake_glm, glm_settings, store):
    fake_glm.default = Reply(status=500)
    settings = dataclasses.replace(glm_settings, max_retries=0, breaker_failures=2, concurrency=1)
    ranker = PalrRanker(make_backend(settings), Prompts.from_settings(settings), store)
    rankings = ranker.rank_many([context(u, profile=PROFILE) for u in range(1, 7)])
    assert fake_glm.calls == 2
    assert [r.meta["parse"] for r in rankings] == ["fallback"] * 6
    assert {r.meta["cache"] for r in rankings} == {"miss"}
    assert ranker.llm.counters.snapshot()["rejected"] == 4


def test_users_run_concurrently_within_the_bound(fake_glm, ranker):
    fake_glm.default = Reply(content='[{"i": 0}]', delay_s=0.2)
    started = time.monotonic()
    # A profile of their own each: the same prompt would be answered once, then from the cache.
    rankings = ranker.rank_many([context(u, profile=f"{PROFILE} #{u}") for u in range(1, 7)])
    elapsed = time.monotonic() - started
    assert fake_glm.max_in_flight == 2 and fake_glm.calls == 6
    assert elapsed < 6 * 0.2 and all(r.meta["parse"] == "ok" for r in rankings)


def test_nothing_to_rank(ranker, fake_glm):
    assert ranker.rank(context(1, candidates=(7, 1))) is None  # every candidate rated
    assert ranker.rank(context(1, rated=())) is None  # no history
    assert ranker.rank_many([]) == [] and fake_glm.calls == 0


def test_write_profile(fake_glm, glm_settings, tmp_path):
    fake_glm.default = Reply(content=f"  {PROFILE}\n", usage=(90, 11))
    backend, prompts = make_backend(glm_settings), Prompts.from_settings(glm_settings)
    ratings = tuple(UserRating(m, r, 1000 + i) for i, (m, r) in enumerate(KIDS_FAN))
    profile = write_profile(backend, UserHistory(1, True, ratings), MOVIES, prompts)
    assert (profile.user_id, profile.text, profile.backend, profile.version) == (
        1, PROFILE, "zhipuai:glm-4-flash", f"palr-v2-{prompts.template_key('profile')}-{PROFILE_RULE}")
    edited = tmp_path / "prompts"
    shutil.copytree(glm_settings.prompts_dir, edited)
    (edited / "profile.v2.txt").write_text((edited / "profile.v2.txt").read_text() + " Be brief.")
    assert Prompts(edited).template_key("profile") != prompts.template_key("profile")  # an edit re-profiles
    rows = "".join(f"{m},{r:g},{1000 + i}\n" for i, (m, r) in enumerate(KIDS_FAN))
    assert profile.history_hash == hashlib.sha256(rows.encode()).hexdigest() == history_hash(ratings)
    assert profile.meta == {"model": "glm-4-flash", "prompt_tokens": 90, "completion_tokens": 11, "written_by": "model"}
    assert history_hash(ratings[:-1] + (UserRating(7, 2.0, 1005),)) != profile.history_hash
    assert "\n1.5: Saw (2004)|Horror Thriller\n" in fake_glm.requests[0]["messages"][0]["content"]
    fake_glm.default = Reply(content="Loves animated family films; avoids horror.", usage=(90, 11))  # not 4 lines
    replaced = write_profile(backend, UserHistory(1, True, ratings), MOVIES, prompts)
    assert replaced.text == data_profile([Rated(MOVIES[m], r) for m, r in KIDS_FAN]) and replaced.meta["written_by"] == "data"
    assert replaced.meta["model_text"] == "Loves animated family films; avoids horror."


# ---- the local backend end to end ---------------------------------------------------------------

@pytest.fixture(scope="module")
def local_backend():
    return LocalMiniLMBackend()


def test_local_palr_end_to_end(local_backend, tmp_path):
    store = FileStore(tmp_path, fsync=False)
    prompts = Prompts.from_settings(LLMSettings())
    users = [context(1), context(2, CRIME_FAN), context(3, ((10, 5.0), (6, 4.5), (1, 1.0)))]
    kids, crime, horror = PalrRanker(local_backend, prompts, store).rank_many(users)
    assert all(r.meta["parse"] == "ok" for r in (kids, crime, horror))
    assert _ids(kids).index(8) < _ids(kids).index(13)  # Finding Nemo before Scream
    assert _ids(crime).index(11) < _ids(crime).index(14)  # Casino before Monsters, Inc.
    assert _ids(horror).index(13) < _ids(horror).index(14)  # Scream before Monsters, Inc.
    assert "Animation" in kids.items[0].reason
    profile = write_profile(local_backend, UserHistory(1, True, users[0].ratings), MOVIES, prompts)
    # The stand-in's summary is not the template's four lines: the data profile is stored, its text kept aside.
    assert profile.backend == "local-minilm" and "Favourite genres: Animation" in profile.meta["model_text"]
    assert profile.text.startswith("Likes: Animation") and profile.meta["written_by"] == "data"
    calls = local_backend.counters.snapshot()["calls"]
    again = PalrRanker(local_backend, prompts, store).rank_many(users)
    assert local_backend.counters.snapshot()["calls"] == calls
    assert [r.items for r in again] == [kids.items, crime.items, horror.items]


def test_the_local_backend_is_driven_one_user_at_a_time(local_backend, monkeypatch):
    threads, in_flight, most = set(), [0], [0]
    rank = local_backend.rank

    def tracked(request):
        threads.add(threading.get_ident())
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        try:
            return rank(request)
        finally:
            in_flight[0] -= 1
    monkeypatch.setattr(local_backend, "rank", tracked)
    prompts = Prompts.from_settings(LLMSettings())
    rankings = PalrRanker(local_backend, prompts).rank_many([context(u, profile=f"#{u}") for u in range(1, 6)])
    assert local_backend.concurrency == 1 and most[0] == 1 and len(threads) == 1
    assert all(r.meta["parse"] == "ok" for r in rankings)


def test_from_settings_builds_the_configured_ranker(tmp_path):
    ranker = from_settings(Settings().replace(llm={"backend": "local-minilm"}), FileStore(tmp_path), None)
    assert ranker.backend == "local-minilm" and ranker.version == "palr-v2" and ranker.store.root == tmp_path
    settings = Settings().replace(base=None, llm={"backend": "local-minilm", "history_items": 7, "rank_k": 30,
                                                  "rank_top_n": 5})
    ranker = from_settings(settings, None, None)
    assert ranker.prompts.history_items == 7 and (ranker.k, ranker.top_n) == (30, 5)
    assert make_ranker("llm", settings, None).name == "llm"
