"""PALR (arXiv 2305.07622) on SparrowRecsys: a profile of the user, then an LLM ranks the candidates.

Step 1 (`write_profile`) summarises a user's history; a Spark job writes those profiles to the
store ahead of time. Step 2 (`PalrRanker`) ranks the first candidates (the base ranker's, else the
host's unrated ones) in one of two ways:
  * generation (a chat API, zhipuai): the rank prompt with the profile, the recent history and the first
    K candidates; the answer's picks come first (`parsing.parse_ranking`), with the model's reasons;
  * label scores (a model whose logits can be read, `local`; LlamaRec's verbalizer): the choose prompt
    with the first `choice_k` candidates lettered A, B, ...; one forward pass per pass (extra passes shuffle
    the letters, against position bias) scores every candidate, and the score is fused with the base's
    (`rankers.fusion.fuse`, the weight chosen on validation users).
Reasons: a model that writes text (`ChatBackend`: GLM, the local model) writes one for each of the list's first
`reasons` (10) movies, in one answer to the reasons prompt per user, after the order is known (at fusion
weight 0 too: the served list is what users read). Each is checked against the data before it is stored
(`reasons.ListReasons`): a false one, a repeat, or a movie without one gets a data reason no earlier movie of the
list has; the record's meta counts those kept (`reasons_model`) and those found false (`reasons_replaced`).
Answers and scores are cached by content, so a rerun with nothing changed makes no LLM call; an LLM failure
serves the base's order (data reasons, for the reasons), never an exception.
"""
from __future__ import annotations

import hashlib
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ...config import Settings
from ...domain import MovieMeta, Profile, RankedItem, Ranking, UserContext, UserHistory, UserRating
from ...store import Store, StoreError
from ..base import BaseRanker, Ranker, base_key
from ..fusion import fuse, window_base_scores
from ..llm.base import Backend, ChatBackend, Completion, LabelScorer, LLMError, make_backend
from ..llm.local_lm import LocalLMBackend
from .checkpoint import serving_model
from .parsing import PARSE_FALLBACK, PARSE_OK, parse_ranking, parse_reasons
from .prompts import OPTION_LABELS, PromptRequest, Prompts, Rated
from .reasons import PROFILE_RULE, ListReasons, checked_profile

__all__ = ["PalrRanker", "write_profile", "profile_version", "history_hash", "cache_key", "from_settings",
           "DEFAULT_K", "DEFAULT_TOP_N", "DEFAULT_CHOICE_K", "DEFAULT_REASONS"]

log = logging.getLogger(__name__)

DEFAULT_K = 50  # host candidates shown to the LLM
DEFAULT_TOP_N = 20  # picks asked for; the rest of the list keeps the host's order
DEFAULT_CHOICE_K = 20  # candidates a label-scoring model scores (LlamaRec: the retriever's top 20)
DEFAULT_REASONS = 10  # the served list's first movies whose reasons the model writes (SPARROW_LLM_REASONS)


def _rated(ratings: Sequence[UserRating], movies: Mapping[int, MovieMeta]) -> list[Rated]:
    """History rows of movies the host knows, oldest first."""
    return [Rated(movies[r.movie_id], r.rating) for r in ratings if r.movie_id in movies]


def history_hash(ratings: Sequence[UserRating]) -> str:
    """sha256 of the history rows; a profile job rewrites a profile only when this changes."""
    rows = "".join(f"{r.movie_id},{r.rating:g},{r.timestamp}\n" for r in ratings)
    return hashlib.sha256(rows.encode()).hexdigest()


def _version(prompts: Prompts) -> str:
    return f"palr-{prompts.version}"


def profile_version(prompts: Prompts) -> str:
    """What a profile is stamped with: the ranker's version, the profile template's content and the rule that checks
    it, so that a profile job rewrites the profiles of an edited template or an older rule."""
    return f"{_version(prompts)}-{prompts.template_key('profile')}-{PROFILE_RULE}"


def cache_key(llm: Backend, request: PromptRequest) -> str:
    """Content address of one answer: who answers (backend, model, the model files' content), which template,
    what prompt (and the answer's start given to the model)."""
    parts = (llm.name, llm.model, llm.weights_key, f"{request.step}.{request.version}", request.text,
             *((request.prefill,) if request.prefill else ()))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


_MODEL_TEXT_CHARS = 400


def write_profile(llm: Backend, history: UserHistory, movies: Mapping[int, MovieMeta],
                  prompts: Prompts) -> Profile:
    """PALR step 1 for one user: a pure function of its inputs and the backend. Raises LLMError. The model's
    profile is stored when it is true of the history, else the data profile (`reasons.checked_profile`);
    `meta["written_by"]` says which, and `meta["model_text"]` keeps a replaced answer's start for review."""
    rated = _rated(history.ratings, movies)
    completion = llm.profile(prompts.profile_request(rated))
    text, kept = checked_profile(completion.text, rated)
    return Profile(history.user_id, text, llm.name, profile_version(prompts), history_hash(history.ratings),
                   meta={"model": completion.model, "prompt_tokens": completion.prompt_tokens,
                         "completion_tokens": completion.completion_tokens, "written_by": "model" if kept else "data",
                         **({} if kept else {"model_text": completion.text.strip()[:_MODEL_TEXT_CHARS]})})


@dataclass
class _Tally:
    """What one user's ranking cost: backend calls asked for, the tokens of the answers used, the time the
    backend took for the calls made now (cached answers cost none)."""

    llm_calls: int = 0
    cache_hits: int = 0  # answers or scores read from the cache
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_s: float = 0.0

    def meta(self, parse: str) -> dict:
        """`cache` only when the cache took part: "miss" (a call was made) or "hit" (every answer was cached);
        a user ranked with no LLM at all (fusion weight 0) says neither."""
        cache = {"cache": "miss"} if self.llm_calls else {"cache": "hit"} if self.cache_hits else {}
        return {"parse": parse, "llm_calls": self.llm_calls, **cache, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "llm_ms": round(self.llm_s * 1000)}


class PalrRanker(BaseRanker):
    """The `llm` model: PALR over the base's (or the host's) candidates (the `Ranker` protocol of rankers.py)."""

    name = "llm"

    def __init__(self, llm: Backend, prompts: Prompts, store: Store | None = None, *,
                 k: int = DEFAULT_K, top_n: int = DEFAULT_TOP_N, choice_k: int = DEFAULT_CHOICE_K,
                 passes: int = 1, weight: float = 1.0, seed: int = 0, reasons: int = DEFAULT_REASONS):
        if k < 1 or top_n < 1 or reasons < 0:
            raise ValueError(f"k and top_n must be >= 1 and reasons >= 0, got k={k}, top_n={top_n}, reasons={reasons}")
        if not 2 <= choice_k <= len(OPTION_LABELS) or passes < 1 or not 0.0 <= weight <= 1.0:
            raise ValueError(f"choice_k must be in [2, {len(OPTION_LABELS)}], passes >= 1 and weight in [0, 1]; "
                             f"got {choice_k}, {passes}, {weight}")
        self.llm = llm
        self.prompts = prompts
        self.store = store
        self.k, self.top_n = k, top_n
        self.choice_k, self.passes, self.weight, self.seed = choice_k, passes, weight, seed
        self.reasons = reasons
        self.backend = llm.name
        self.version = _version(prompts)
        self.scores_labels = isinstance(llm, LabelScorer)
        # Loads (and so checks) the choose template now, not on the first user.
        self._needs_profile = prompts.uses_profile("choose" if self.scores_labels else "rank")

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        """Users in parallel; the backend bounds what is really in flight (the local one batches them)."""
        if not contexts:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.llm.concurrency, len(contexts))),
                                thread_name_prefix="palr") as pool:
            return list(pool.map(self.rank, contexts))

    def close(self) -> None:
        """The backend's threads and clients (the local model's batcher, zhipuai's HTTP client)."""
        self.llm.close()

    def rank(self, ctx: UserContext) -> Ranking | None:
        candidates = ctx.unrated_candidates()
        history = _rated(ctx.ratings, ctx.movies)
        if not candidates or not history:
            return None
        tally = _Tally()
        try:
            # A stored profile goes into every prompt that shows one (the reasons' too); one is written here only
            # for a ranking prompt that needs it.
            profile = ctx.profile.text if ctx.profile else "" if not self._needs_profile else self._answer(
                self.llm.profile, self.prompts.profile_request(history), tally, usable=lambda text: bool(text.strip()))
            if self.scores_labels:
                window = candidates[: self.choice_k]
                order = self._by_scores(ctx, window, history, profile, tally) + candidates[len(window):]
                status, proposed, extra = PARSE_OK, {}, {"weight": self.weight, "passes": self.passes}
            else:
                window = candidates[: self.k]
                request = self.prompts.rank_request(history, [ctx.movies[m] for m in window], profile, self.top_n)
                parsed = parse_ranking(self._answer(
                    self.llm.rank, request, tally,
                    usable=lambda text: parse_ranking(text, request.labels).status != PARSE_FALLBACK), request.labels)
                picked = [window[i] for i in parsed.indexes]
                order = picked + [m for m in candidates if m not in set(picked)]
                status, proposed, extra = parsed.status, dict(zip(picked, parsed.reasons)), {}
        except LLMError as exc:
            log.info("%s: user %s gets the base's order: %s", self.backend, ctx.user_id, exc)
            return Ranking(_items(candidates, {}), {**tally.meta(PARSE_FALLBACK), "error": type(exc).__name__,
                                                    "error_message": str(exc)})
        top = order[: max(self.top_n, self.reasons)]
        proposed.update((m, r) for m, r in self._written(ctx, history, profile, top[: self.reasons], tally).items() if r)
        writer = ListReasons(history, ctx.movies, ctx.base_reasons)
        reasons = {m: writer.reason(ctx.movies[m], proposed.get(m, "")) for m in top}
        return Ranking(_items(order, reasons), {**tally.meta(status), **extra, "reasons_model": writer.model,
                                                "reasons_replaced": writer.replaced})

    def _written(self, ctx: UserContext, history: Sequence[Rated], profile: str, top: Sequence[int],
                 tally: _Tally) -> dict[int, str]:
        """The model's reason of each movie of `top`, from one answer to the reasons prompt ("" for one it lacks);
        none from a backend that writes no text (`local-minilm`) or that failed (data reasons serve)."""
        if not top or not isinstance(self.llm, ChatBackend):
            return {}
        request = self.prompts.reasons_request(history, [ctx.movies[m] for m in top], profile)
        try:
            text = self._answer(self.llm.explain, request, tally,
                                usable=lambda answer: any(parse_reasons(answer, len(top))))
        except LLMError as exc:
            log.info("%s: user %s gets data reasons: %s", self.backend, ctx.user_id, exc)
            return {}
        return dict(zip(top, parse_reasons(text, len(top))))

    def _by_scores(self, ctx: UserContext, window: Sequence[int], history: Sequence[Rated], profile: str,
                   tally: _Tally) -> list[int]:
        """The window in fused order: the mean option log-probability over the passes (the first in the base's
        order, the others seeded shuffles of it), fused with the base's score. At weight 0 that is the base's
        order whatever the scores: no forward pass is spent on it."""
        if self.weight == 0.0:
            return list(window)
        movies = [ctx.movies[m] for m in window]
        orders = [list(range(len(window)))] + [
            random.Random(f"{self.seed}:{ctx.user_id}:{p}").sample(range(len(window)), len(window))
            for p in range(1, self.passes)]
        requests = [self.prompts.choose_request(history, [movies[i] for i in order], profile) for order in orders]
        llm = np.zeros(len(window))
        for order, row in zip(orders, self._scores(requests, tally)):
            llm[order] += row
        base = window_base_scores(window, ctx.base_scores)
        fused = fuse(llm / len(orders), base, self.weight)
        return [window[i] for i in np.argsort(-fused, kind="stable")]

    def _scores(self, requests: list[PromptRequest], tally: _Tally) -> list[list[float]]:
        """Each request's option scores, from the cache or else from the backend (misses in one call, then cached)."""
        keys = [cache_key(self.llm, r) for r in requests]
        found = {key: cached for key in keys if (cached := self._cache_get(key)) is not None and "scores" in cached}
        misses = [(key, r) for key, r in zip(keys, requests) if key not in found]
        tally.cache_hits += len(requests) - len(misses)
        if misses:
            tally.llm_calls += len(misses)
            scored = self.llm.score_options([r for _, r in misses])
            tally.llm_s += scored.latency_s
            share = scored.prompt_tokens // len(misses)
            for (key, _), row in zip(misses, scored.scores):
                found[key] = {"scores": list(row), "model": scored.model, "usage": {"prompt_tokens": share}}
                self._cache_put(key, found[key])
        for key in keys:
            tally.prompt_tokens += int((found[key].get("usage") or {}).get("prompt_tokens", 0))
        return [found[key]["scores"] for key in keys]

    def _answer(self, step: Callable[[PromptRequest], Completion], request: PromptRequest, tally: _Tally, *,
                usable: Callable[[str], bool]) -> str:
        """The answer to `request`, from the cache or else from the backend (then cached if `usable`).

        An unusable answer (empty, garbage) is never cached: a cached one would pin the user to the
        host's order until the template or model changed. A new template version or model changes the key.
        """
        key = cache_key(self.llm, request)
        cached = self._cache_get(key)
        if cached is not None and usable(str(cached.get("text") or "")):
            tally.cache_hits += 1
            usage = cached.get("usage") or {}
            tally.prompt_tokens += int(usage.get("prompt_tokens", 0))
            tally.completion_tokens += int(usage.get("completion_tokens", 0))
            return str(cached.get("text") or "")
        tally.llm_calls += 1  # counted before the call: a failed or refused call is a miss too
        completion = step(request)
        tally.prompt_tokens += completion.prompt_tokens
        tally.completion_tokens += completion.completion_tokens
        tally.llm_s += completion.latency_s
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


def _items(order: Sequence[int], reasons: Mapping[int, str]) -> tuple[RankedItem, ...]:
    """The ranked list with its reasons; scores descend with the rank."""
    n = len(order)
    return tuple(RankedItem(m, round(1.0 - pos / n, 6), reasons.get(m, "")) for pos, m in enumerate(order))


def from_settings(settings: Settings, store: Store | None, base: Ranker | None) -> PalrRanker:
    """The registry's factory of the `llm` reranker over `base` (None: the host's candidates); its answer cache
    is `store` (None: no cache). The local model serves the adapter fine-tuned for the data folder and base, if
    any, at the fusion weight chosen for it (`checkpoint.serving_model`)."""
    llm, prompts, weight = make_backend(settings.llm), Prompts.from_settings(settings.llm), 1.0
    if isinstance(llm, LocalLMBackend):
        serving = serving_model(settings, llm, prompts, base_key(base))
        llm, weight = serving.llm, serving.weight
    return PalrRanker(llm, prompts, store, k=settings.llm.rank_k, top_n=settings.llm.rank_top_n,
                      choice_k=settings.llm.verbalizer_k, passes=settings.llm.verbalizer_passes, weight=weight,
                      seed=settings.seed, reasons=settings.llm.reasons)
