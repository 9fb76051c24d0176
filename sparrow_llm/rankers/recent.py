"""`recent`: the host's item2vec vectors, read from the user's recent taste instead of the whole history."""
from __future__ import annotations

import numpy as np

from ..domain import RankedItem, Ranking, UserContext
from .base import BaseRanker, unit_rows

__all__ = ["RecentRanker"]


class RecentRanker(BaseRanker):
    """Session-aware item2vec: cosine to the mean vector of the user's most recent liked movies.

    The host's `emb` ranker averages every movie the user ever rated; this one follows the
    user's recent taste, and leaves out what the user has already rated.
    """

    name = "recent"
    backend = "item2vec"
    needs_emb = True

    def __init__(self, recent_n: int = 10):
        if recent_n < 1:
            raise ValueError("recent_n must be >= 1")
        self.recent_n = recent_n
        self.version = f"recent-v1-n{recent_n}"

    def rank(self, ctx: UserContext) -> Ranking | None:
        seeds = [r for r in ctx.recent_liked(len(ctx.ratings)) if ctx.movies[r.movie_id].emb][: self.recent_n]
        candidates = [m for m in ctx.unrated_candidates() if ctx.movies[m].emb]
        if not seeds or not candidates:
            return None
        seed_vecs = unit_rows(np.array([ctx.movies[r.movie_id].emb for r in seeds], dtype=np.float64))
        cand_vecs = unit_rows(np.array([ctx.movies[m].emb for m in candidates], dtype=np.float64))
        profile = seed_vecs.mean(axis=0)
        scores = cand_vecs @ (profile / (np.linalg.norm(profile) or 1.0))
        nearest = (cand_vecs @ seed_vecs.T).argmax(axis=1)  # the recent movie each candidate is closest to
        order = np.argsort(-scores, kind="stable")  # ties keep the host's order
        items = tuple(
            RankedItem(candidates[i], round(float(scores[i]), 6),
                       f"close to {ctx.movies[seeds[nearest[i]].movie_id].title}, which you liked recently")
            for i in order)
        return Ranking(items, {"seeds": [r.movie_id for r in seeds]})


def from_settings(settings, store=None) -> RecentRanker:
    return RecentRanker()
