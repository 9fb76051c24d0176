"""`local-minilm`: offline PALR without a generative model (a rule-based profile, MiniLM cosine ranking).

A stand-in kept under its own name for machines that cannot run a language model; it says so in
every record.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict
from typing import Sequence

import numpy as np

from ...config import ConfigError
from ...domain import MovieMeta, Rated, movie_label, movie_text, spoken_title
from ...minilm import DIM, minilm
from ...schema import LIKED_RATING
from ..base import unit_rows
from .base import Backend, Completion, PromptRequest

__all__ = ["LocalMiniLMBackend", "from_settings"]


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
            fresh = minilm().embed(misses)
            found.update(zip(misses, fresh))
            with self._lock:
                self.embedded += len(misses)
                if self.capacity:
                    self._cache.update(zip(misses, fresh))
                    while len(self._cache) > self.capacity:
                        self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, DIM), dtype=np.float32)


def _top(counter: Counter, n: int) -> str:
    return ", ".join(f"{name} ({count})" for name, count in counter.most_common(n))


_REASON_WORDS = 4  # what the rank prompt allows a reason


class LocalMiniLMBackend(Backend):
    """Offline PALR: a rule-based profile and a MiniLM-embedding ranking, no generative model.

    The ranking's query is half recent taste (the user's last liked movies) and half long-term
    taste (every history row, weighted by how far its rating is from the user's mean), as PALR's
    prompt pairs the recent history with the profile. The local profile is itself a summary of
    those rows, so the query reads them directly and the request's profile text is not embedded:
    a user's ranking is numpy work on cached movie embeddings, and only movie texts never seen
    before run through the model.
    """

    name = "local-minilm"
    model = "all-MiniLM-L6-v2"
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
        recent = unit_rows(hist_vecs[seeds].mean(axis=0))
        # Long-term: loved rows pull, hated rows push; a user who rates everything alike, plain mean.
        centred = ratings - ratings.mean()
        lasting = unit_rows(centred @ hist_vecs if np.any(centred) else hist_vecs.mean(axis=0))
        query = unit_rows(recent + lasting)
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
        like = f"like {spoken_title(closest)}"
        options = [f"{matched[0]}, {like}", like, " & ".join(matched)] if matched else [like]
        return next((o for o in options if len(o.split()) <= _REASON_WORDS), "like your recent favourites")


def from_settings(settings) -> LocalMiniLMBackend:
    return LocalMiniLMBackend()  # nothing to configure
