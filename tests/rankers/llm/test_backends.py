import dataclasses
import json
import logging
import random
import threading
import time

import numpy as np
import pytest

from sparrow_llm.rankers.llm import local_minilm as llm_module
from sparrow_llm.config import ConfigError, LLMSettings, Settings
from sparrow_llm.rankers.llm.base import (
    BACKENDS, LLMAuthError, LLMError, LLMRateLimited, LLMTimeout, LLMUnavailable, make_backend,
)
from sparrow_llm.rankers.llm.local_minilm import LocalMiniLMBackend
from sparrow_llm.rankers.llm.zhipu import ZhipuBackend
from sparrow_llm.rankers.palr.parsing import PARSE_OK, parse_ranking
from sparrow_llm.rankers.palr.prompts import Prompts, Rated, movie_text

from tests.fake_glm import CRIME_FAN, KIDS_FAN, MOVIES, VALID_KEY, Reply, fake_glm, glm_settings, movie  # noqa: F401

HELLO = [{"role": "user", "content": "Say hi"}]


class FakeTime:
    """A clock that only moves when slept on: rate limits and backoff without waiting."""

    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += seconds


def _backend(settings: LLMSettings, **kw) -> ZhipuBackend:
    kw.setdefault("backoff_s", 0.01)
    return ZhipuBackend(settings, **kw)


def _ask(backend, content="Say hi", max_tokens=32):
    return backend.complete([{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0.0)


# ---- zhipuai against the fake server ---------------------------------------------------------

def test_good_answer_and_request_shape(fake_glm, glm_settings):
    fake_glm.push(Reply(content='[{"i": 0, "r": "fun"}]', usage=(42, 7)))
    backend = make_backend(glm_settings)
    completion = backend.complete(HELLO, max_tokens=64, temperature=0.0)
    assert completion.text == '[{"i": 0, "r": "fun"}]'
    assert (completion.prompt_tokens, completion.completion_tokens, completion.model) == (42, 7, "glm-4-flash")
    assert 0 < completion.latency_s < 5
    assert backend.name == "zhipuai:glm-4-flash"
    body = fake_glm.requests[0]
    assert body["model"] == "glm-4-flash" and body["max_tokens"] == 64
    assert body["messages"] == HELLO and body["do_sample"] is False  # greedy: answers are cached
    assert HELLO == [{"role": "user", "content": "Say hi"}]  # the caller's messages are untouched
    assert backend.counters.snapshot() == {"calls": 1, "retries": 0, "failures": 0, "rejected": 0,
                                           "prompt_tokens": 42, "completion_tokens": 7}


def test_429_then_success_retries_and_honours_retry_after(fake_glm, glm_settings):
    fake_glm.push(Reply(status=429, headers={"Retry-After": "1.5"}), Reply(content="ok"))
    t = FakeTime()
    backend = _backend(glm_settings, sleep=t.sleep)
    assert _ask(backend).text == "ok"
    assert fake_glm.calls == 2 and t.slept == [1.5]
    assert backend.counters.snapshot()["retries"] == 1


def test_5xx_backoff_has_full_jitter(fake_glm, glm_settings):
    fake_glm.push(Reply(status=503), Reply(status=500), Reply(content="ok"))
    t = FakeTime()
    backend = _backend(glm_settings, backoff_s=1.0, sleep=t.sleep, rng=random.Random(7))
    assert _ask(backend).text == "ok"
    assert len(t.slept) == 2 and 0 <= t.slept[0] <= 1.0 and 0 <= t.slept[1] <= 2.0
    assert t.slept != [1.0, 2.0]  # jittered, not the plain exponential


def test_5xx_past_the_retry_budget(fake_glm, glm_settings):
    fake_glm.default = Reply(status=500)
    backend = _backend(glm_settings)
    with pytest.raises(LLMUnavailable, match="HTTP 500") as err:
        _ask(backend)
    assert fake_glm.calls == glm_settings.max_retries + 1
    assert err.value.__cause__ is None and err.value.__suppress_context__
    counters = backend.counters.snapshot()
    assert (counters["calls"], counters["retries"], counters["failures"]) == (1, 2, 1)


def test_rate_limited_past_the_retry_budget(fake_glm, glm_settings):
    fake_glm.default = Reply(status=429, error_code="1302")
    with pytest.raises(LLMRateLimited, match="1302"):
        _ask(_backend(dataclasses.replace(glm_settings, max_retries=1)))
    assert fake_glm.calls == 2


def test_400_is_not_retried(fake_glm, glm_settings):
    fake_glm.push(Reply(status=400, error_code="1210"))
    with pytest.raises(LLMError, match="1210") as err:
        _ask(_backend(glm_settings))
    assert type(err.value) is LLMError and fake_glm.calls == 1


def test_malformed_body_is_an_llm_error(fake_glm, glm_settings):
    fake_glm.push(Reply(raw_body=b"<html>gateway</html>"))
    with pytest.raises(LLMError, match="unusable answer"):
        _ask(_backend(glm_settings))
    assert fake_glm.calls == 1


def test_slow_answer_times_out_fast(fake_glm, glm_settings):
    fake_glm.default = Reply(content="late", delay_s=1.5)
    backend = _backend(dataclasses.replace(glm_settings, timeout_s=0.2, max_retries=1))
    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        _ask(backend)
    assert time.monotonic() - started < 1.2  # two attempts of 0.2 s, not the SDK's 300 s
    assert fake_glm.calls == 2


def test_unreachable_server():
    settings = LLMSettings(backend="zhipuai", base_url="http://127.0.0.1:9/api/paas/v4", api_key=VALID_KEY,
                           max_retries=1, timeout_s=0.5)
    with pytest.raises(LLMUnavailable, match="cannot reach"):
        _ask(_backend(settings))


def test_bad_key_is_a_clear_error_that_never_shows_the_key(fake_glm, glm_settings, caplog):
    secret = "sk-wrong.SECRET-abcdef987654"
    settings = dataclasses.replace(glm_settings, api_key=secret)
    caplog.set_level(logging.DEBUG)
    backend = _backend(settings)
    with pytest.raises(LLMAuthError) as err:
        _ask(backend)
    message = str(err.value)
    assert "ZHIPUAI_API_KEY" in message and "HTTP 401" in message
    assert fake_glm.refused == 1  # not retried
    assert secret not in message and "SECRET" not in message  # the server echoed it; we scrubbed it
    assert secret not in caplog.text and secret not in repr(settings) and secret not in repr(backend)
    assert secret not in repr(Settings().replace(llm={"api_key": secret}))


def test_missing_key_names_the_variable_and_ignores_the_environment(monkeypatch):
    monkeypatch.setenv("ZHIPUAI_API_KEY", VALID_KEY)  # only Settings.from_env may read it
    with pytest.raises(LLMAuthError, match="ZHIPUAI_API_KEY"):
        make_backend(LLMSettings(backend="zhipuai", api_key=None))


def test_circuit_breaker_opens_and_recovers(fake_glm, glm_settings):
    fake_glm.default = Reply(status=502)
    t = FakeTime()
    settings = dataclasses.replace(glm_settings, max_retries=0, breaker_failures=2, breaker_cooldown_s=30.0)
    backend = _backend(settings, clock=t.clock, sleep=t.sleep)
    for _ in range(2):
        with pytest.raises(LLMUnavailable, match="HTTP 502"):
            _ask(backend)
    with pytest.raises(LLMUnavailable, match="circuit breaker open"):
        _ask(backend)
    assert fake_glm.calls == 2  # refused without a request
    assert backend.counters.snapshot()["rejected"] == 1
    t.now += 31  # cooldown over: one probe goes through, a failure reopens at once
    with pytest.raises(LLMUnavailable, match="HTTP 502"):
        _ask(backend)
    with pytest.raises(LLMUnavailable, match="circuit breaker open"):
        _ask(backend)
    t.now += 31
    fake_glm.default = Reply(content="back")
    assert _ask(backend).text == "back"
    assert _ask(backend).text == "back"  # a success closed it
    assert fake_glm.calls == 5


def test_request_errors_do_not_open_the_breaker(fake_glm, glm_settings):
    fake_glm.default = Reply(status=400)
    backend = _backend(dataclasses.replace(glm_settings, breaker_failures=1))
    for _ in range(3):
        with pytest.raises(LLMError, match="HTTP 400"):
            _ask(backend)
    assert fake_glm.calls == 3


def test_concurrency_is_bounded(fake_glm, glm_settings):
    fake_glm.default = Reply(content="ok", delay_s=0.15)
    backend = _backend(glm_settings)  # concurrency 2
    threads = [threading.Thread(target=_ask, args=(backend,)) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert fake_glm.calls == 6 and fake_glm.max_in_flight == 2
    assert backend.counters.snapshot()["calls"] == 6


def test_requests_per_second_limit(fake_glm, glm_settings):
    t = FakeTime()
    backend = _backend(dataclasses.replace(glm_settings, requests_per_s=2.0), clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        _ask(backend)
    assert sum(t.slept) == pytest.approx(1.0)  # 2nd and 3rd request each wait half a second


def test_tokens_per_minute_limit_counts_real_usage(fake_glm, glm_settings):
    t = FakeTime()
    backend = _backend(dataclasses.replace(glm_settings, tokens_per_min=600.0), clock=t.clock, sleep=t.sleep)
    fake_glm.push(Reply(content="big", usage=(500, 100)))  # the whole minute's budget
    _ask(backend, max_tokens=10)
    assert t.slept == []
    _ask(backend, max_tokens=10)
    # The bucket is empty after the real usage: the next estimate (~15 tokens) waits at 10 tokens/s.
    assert 1.0 < sum(t.slept) < 3.0


def test_unknown_backend():
    with pytest.raises(ConfigError, match="local, local-minilm, zhipuai"):
        make_backend(LLMSettings(backend="gpt"))
    assert set(BACKENDS) == {"zhipuai", "local", "local-minilm"}


# ---- local ------------------------------------------------------------------------------------

def _rows(rated):
    return [Rated(MOVIES[m], r) for m, r in rated]


@pytest.fixture(scope="module")
def local():
    return make_backend(LLMSettings(backend="local-minilm"))


def test_local_profile_describes_the_history(local):
    prompts = Prompts.from_settings(LLMSettings())
    text = local.profile(prompts.profile_request(_rows(KIDS_FAN))).text
    assert local.name == "local-minilm" and isinstance(local, LocalMiniLMBackend)
    assert text.startswith("Favourite genres: Animation (4), Children (4)")
    assert "Disliked genres: Horror (2)" in text and "1990s (4)" in text
    assert "mean 3.5" in text and "67% at 4 or more" in text
    assert "Loved: Aladdin (1992), Toy Story (1995)" in text and "Least liked: Shining, The (1980)" in text
    assert local.profile(prompts.profile_request(_rows(KIDS_FAN))).text == text  # deterministic
    crime = local.profile(prompts.profile_request(_rows(CRIME_FAN))).text
    assert crime.startswith("Favourite genres: Crime (3)")
    disliked = crime.split("Disliked genres: ")[1].split(".")[0]
    assert "Comedy (1)" in disliked and "Mystery" not in disliked  # Mystery: liked once, disliked once


@pytest.mark.parametrize("rated, liked, unrelated", [(KIDS_FAN, 8, 10), (CRIME_FAN, 11, 14)])
def test_local_rank_puts_the_liked_genre_first(local, rated, liked, unrelated):
    prompts = Prompts.from_settings(LLMSettings())
    candidates = [MOVIES[m] for m in (10, 14, 11, 8, 15)]
    profile = local.profile(prompts.profile_request(_rows(rated))).text
    request = prompts.rank_request(_rows(rated), candidates, profile, top_n=5)
    answer = local.rank(request)
    parsed = parse_ranking(answer.text, request.labels)
    assert parsed.status == PARSE_OK and len(parsed.indexes) == 5
    order = [candidates[i].movie_id for i in parsed.indexes]
    assert order.index(liked) < order.index(unrelated)
    reasons = dict(zip(order, parsed.reasons))
    top_genre = "Animation" if rated is KIDS_FAN else "Crime"
    assert top_genre in reasons[liked] and "like " in reasons[liked]
    assert all(len(r.split()) <= 4 for r in parsed.reasons)  # as the prompt asks
    assert json.loads(answer.text)[0][0] == parsed.indexes[0]  # the pairs the v2 prompt asks for


@pytest.mark.parametrize("closest, genres, reason", [
    ("Godfather, The", ("Crime",), "Crime, like The Godfather"),
    ("Postman, The (Postino, Il)", ("Crime",), "Crime, like The Postman"),
    ("Heat", ("Horror",), "like Heat"),  # the user likes no Horror
    ("Big Lebowski, The", ("Crime", "Drama"), "like The Big Lebowski"),
    ("Lord of the Rings: The Two Towers", ("Crime", "Drama"), "Crime & Drama"),
    ("Lord of the Rings: The Two Towers", ("Horror",), "like your recent favourites"),
])
def test_local_reasons_have_at_most_four_words(closest, genres, reason):
    weights = {"Crime": 0.6, "Drama": 0.3}
    assert LocalMiniLMBackend._reason(movie(1, "X", 2000, *genres), weights, movie(2, closest, 1990)) == reason


def _user(rated, candidates=(10, 14, 11, 8, 15)):
    prompts = Prompts.from_settings(LLMSettings())
    return prompts.rank_request(_rows(rated), [MOVIES[m] for m in candidates], "", top_n=5)


def test_local_embeds_each_movie_text_once(monkeypatch):
    backend = LocalMiniLMBackend()
    kids, crime = _user(KIDS_FAN), _user(CRIME_FAN)
    first = backend.rank(kids).text
    texts = {movie_text(m) for m in kids.candidates} | {movie_text(r.movie) for r in kids.history}
    assert backend.vectors.embedded == len(backend.vectors) == len(texts)
    backend.rank(crime)
    texts |= {movie_text(r.movie) for r in crime.history}  # the candidates are shared: not embedded again
    assert backend.vectors.embedded == len(texts)

    # Warm: a user's ranking is numpy work on cached vectors, the model is not touched.
    def no_model():
        raise AssertionError("the model ran for a cached text")
    monkeypatch.setattr(llm_module, "minilm", no_model)
    assert backend.rank(kids).text == first and backend.vectors.embedded == len(texts)


def test_local_embedding_cache_is_a_bounded_lru():
    cached, tiny, uncached = LocalMiniLMBackend(), LocalMiniLMBackend(embedding_cache=3), LocalMiniLMBackend(embedding_cache=0)
    request = _user(KIDS_FAN)
    answers = {b.rank(request).text for b in (cached, tiny, uncached)}
    assert len(answers) == 1  # the same ranking, whatever is cached
    assert len(tiny.vectors) == 3 and len(uncached.vectors) == 0
    n = uncached.vectors.embedded
    uncached.rank(request)
    assert uncached.vectors.embedded == 2 * n  # no cache: every ranking embeds the user's texts again
    texts = [movie_text(m) for m in request.candidates]
    assert np.allclose(cached.vectors.lookup(texts), uncached.vectors.lookup(texts), atol=1e-5)
    # Least recently used goes first: a hit moves a text to the back.
    tiny.vectors.lookup(["a", "b", "c"])
    tiny.vectors.lookup(["a"])
    tiny.vectors.lookup(["d"])
    assert list(tiny.vectors._cache) == ["c", "a", "d"]
    with pytest.raises(ConfigError, match="embedding cache"):
        LocalMiniLMBackend(embedding_cache=-1)
