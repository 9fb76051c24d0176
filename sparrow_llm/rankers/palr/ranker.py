"""PALR (arXiv 2305.07622) on SparrowRecsys: a profile of the user, then an LLM picks from the host's candidates.

Step 1 (`write_profile`) summarises a user's history; a Spark job writes those profiles to the
store ahead of time. Step 2 (`PalrRanker`) shows the LLM the profile, the recent history and
the first K of the host's unrated candidates, and puts its picks first. Answers are cached by
content, so a rerun with nothing changed makes no LLM call; any LLM failure serves the host's
order, never an exception.
"""
from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from ...config import Settings
from ...domain import MovieMeta, Profile, RankedItem, Ranking, UserContext, UserHistory, UserRating
from ...store import Store, StoreError
from ..base import BaseRanker
from ..llm.base import Backend, Completion, LLMError, make_backend
from .parsing import PARSE_FALLBACK, ParsedRanking, parse_ranking
from .prompts import PromptRequest, Prompts, Rated

__all__ = ["PalrRanker", "write_profile", "history_hash", "cache_key", "from_settings",
           "DEFAULT_K", "DEFAULT_TOP_N"]

log = logging.getLogger(__name__)

DEFAULT_K = 50  # host candidates shown to the LLM
DEFAULT_TOP_N = 20  # picks asked for; the rest of the list keeps the host's order


def _rated(ratings: Sequence[UserRating], movies: Mapping[int, MovieMeta]) -> list[Rated]:
    """History rows of movies the host knows, oldest first."""
    return [Rated(movies[r.movie_id], r.rating) for r in ratings if r.movie_id in movies]


def history_hash(ratings: Sequence[UserRating]) -> str:
    """sha256 of the history rows; a profile job rewrites a profile only when this changes."""
    rows = "".join(f"{r.movie_id},{r.rating:g},{r.timestamp}\n" for r in ratings)
    return hashlib.sha256(rows.encode()).hexdigest()


def _version(prompts: Prompts) -> str:
    return f"palr-{prompts.version}"


def cache_key(llm: Backend, request: PromptRequest) -> str:
    """Content address of one answer: who answers (backend, model), which template, what prompt."""
    parts = (llm.name, llm.model, f"{request.step}.{request.version}", request.text)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def write_profile(llm: Backend, history: UserHistory, movies: Mapping[int, MovieMeta],
                  prompts: Prompts) -> Profile:
    """PALR step 1 for one user: a pure function of its inputs and the backend. Raises LLMError."""
    completion = llm.profile(prompts.profile_request(_rated(history.ratings, movies)))
    return Profile(history.user_id, completion.text.strip(), llm.name, _version(prompts),
                   history_hash(history.ratings),
                   meta={"model": completion.model, "prompt_tokens": completion.prompt_tokens,
                         "completion_tokens": completion.completion_tokens})


@dataclass
class _Tally:
    """What one user's ranking cost: backend calls asked for and the tokens of the answers used."""

    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def meta(self, parse: str) -> dict:
        return {"parse": parse, "llm_calls": self.llm_calls, "cache": "miss" if self.llm_calls else "hit",
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


class PalrRanker(BaseRanker):
    """The `llm` model: PALR over the host's candidates (the `Ranker` protocol of rankers.py)."""

    name = "llm"

    def __init__(self, llm: Backend, prompts: Prompts, store: Store | None = None, *,
                 k: int = DEFAULT_K, top_n: int = DEFAULT_TOP_N):
        if k < 1 or top_n < 1:
            raise ValueError(f"k and top_n must be >= 1, got k={k}, top_n={top_n}")
        self.llm = llm
        self.prompts = prompts
        self.store = store
        self.k, self.top_n = k, top_n
        self.backend = llm.name
        self.version = _version(prompts)

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        """Users in parallel; the backend bounds what is really in flight."""
        if not contexts:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.llm.concurrency, len(contexts))),
                                thread_name_prefix="palr") as pool:
            return list(pool.map(self.rank, contexts))

    def rank(self, ctx: UserContext) -> Ranking | None:
        candidates = ctx.unrated_candidates()
        history = _rated(ctx.ratings, ctx.movies)
        if not candidates or not history:
            return None
        window = candidates[: self.k]
        tally = _Tally()
        try:
            profile = ctx.profile.text if ctx.profile else self._answer(
                self.llm.profile, self.prompts.profile_request(history), tally, usable=lambda text: bool(text.strip()))
            request = self.prompts.rank_request(history, [ctx.movies[m] for m in window], profile, self.top_n)
            parsed = parse_ranking(self._answer(
                self.llm.rank, request, tally,
                usable=lambda text: parse_ranking(text, request.labels).status != PARSE_FALLBACK), request.labels)
        except LLMError as exc:
            log.info("%s: user %s gets the host's order: %s", self.backend, ctx.user_id, exc)
            return _ranking(candidates, [], ParsedRanking((), (), PARSE_FALLBACK),
                            {**tally.meta(PARSE_FALLBACK), "error": type(exc).__name__, "error_message": str(exc)})
        return _ranking(candidates, window, parsed, tally.meta(parsed.status))

    def _answer(self, step: Callable[[PromptRequest], Completion], request: PromptRequest, tally: _Tally, *,
                usable: Callable[[str], bool]) -> str:
        """The answer to `request`, from the cache or else from the backend (then cached if `usable`).

        An unusable answer (empty, garbage) is never cached: a cached one would pin the user to the
        host's order until the template or model changed. A new template version or model changes the key.
        """
        key = cache_key(self.llm, request)
        cached = self._cache_get(key)
        if cached is not None and usable(str(cached.get("text") or "")):
            usage = cached.get("usage") or {}
            tally.prompt_tokens += int(usage.get("prompt_tokens", 0))
            tally.completion_tokens += int(usage.get("completion_tokens", 0))
            return str(cached.get("text") or "")
        tally.llm_calls += 1  # counted before the call: a failed or refused call is a miss too
        completion = step(request)
        tally.prompt_tokens += completion.prompt_tokens
        tally.completion_tokens += completion.completion_tokens
        if usable(completion.text):
            self._cache_put(key, {"text": completion.text, "model": completion.model,
                                  "usage": {"prompt_tokens": completion.prompt_tokens,
                                            "completion_tokens": completion.completion_tokens}})
        return completion.text

    # The cache only saves calls: a store that fails it costs a call, not the user's ranking.
    def _cache_get(self, key: str) -> dict | None:
        if self.store is None:
            return None
        try:
            return self.store.cache_get(key)
        except StoreError as exc:
            log.warning("LLM cache read failed (%s); asking the backend", exc)
            return None

    def _cache_put(self, key: str, value: dict) -> None:
        if self.store is None:
            return
        try:
            self.store.cache_put(key, value)
        except StoreError as exc:
            log.warning("LLM cache write failed (%s)", exc)


def _ranking(candidates: Sequence[int], window: Sequence[int], parsed: ParsedRanking, meta: dict) -> Ranking:
    """The picks first with their reasons, then the host's order; scores descend with the rank."""
    picked = [window[i] for i in parsed.indexes]
    chosen = set(picked)
    order = picked + [m for m in candidates if m not in chosen]
    reasons = dict(zip(picked, parsed.reasons))
    n = len(order)
    return Ranking(tuple(RankedItem(m, round(1.0 - pos / n, 6), reasons.get(m, "")) for pos, m in enumerate(order)),
                   meta)


def from_settings(settings: Settings, store: Store | None) -> PalrRanker:
    """The `llm` model as configured; its answer cache is `store` (None: no cache)."""
    return PalrRanker(make_backend(settings.llm), Prompts.from_settings(settings.llm), store,
                      k=settings.llm.rank_k, top_n=settings.llm.rank_top_n)
