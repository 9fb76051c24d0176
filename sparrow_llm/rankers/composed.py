"""`Reranked(base, reranker, k)`: one ranker made of a base ranker and a reranker over the base's top K.

The registry composes it (`registry.make_ranker`); every path (in-process, Spark, nearline, eval,
calibration) ranks through it, so each serves the same list. Per user:

  1. the base ranks the user's candidates (every ranker ranks only `ctx.candidate_ids`);
  2. the reranker gets a context whose candidates are the base's top K (with `base_scores` and `base_reasons`);
  3. the record is the reranked top K, then the rest of the base's list.

A user the base cannot rank keeps the host's order (None). A user the reranker cannot rank, or whose
reranker failed, gets the base's list: a composed ranker never serves less than its base.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

from ..config import ConfigError
from ..domain import Ranking, UserContext
from .base import Ranker

__all__ = ["Reranked"]

log = logging.getLogger(__name__)


class Reranked:
    """The `Ranker` protocol over a base and a reranker (`reranker.name` is the model served)."""

    def __init__(self, base: Ranker, reranker: Ranker, k: int):
        if k < 1:
            raise ValueError(f"the base's top K must be >= 1, got {k}")
        self.base, self.reranker, self.k = base, reranker, k
        self.name = reranker.name
        self.backend = reranker.backend
        self.version = f"{reranker.version}+{base.version}"
        self.needs_emb = base.needs_emb or reranker.needs_emb
        self.candidate_source = base.candidate_source

    def rank(self, ctx: UserContext) -> Ranking | None:
        return self.rank_many([ctx])[0]

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        bases = [r if r is not None and r.items else None for r in self.base.rank_many(contexts)]
        windows = [None if b is None else self._window(ctx, b) for ctx, b in zip(contexts, bases)]
        asked = [i for i, w in enumerate(windows) if w is not None]
        reranked: dict[int, Ranking | None] = {}
        if asked:
            try:
                reranked = dict(zip(asked, self.reranker.rank_many([windows[i] for i in asked])))
            except ConfigError:  # a setting that cannot work (a model that cannot load): one error line, not per batch
                raise
            except Exception as exc:
                # The reranker's failure costs these users its gain, never their base's list.
                log.warning("%s failed on users %s (%s: %s): serving %s's lists", self.name,
                            [contexts[i].user_id for i in asked], type(exc).__name__, exc, self.base.name)
                reranked = {i: _failed(type(exc).__name__, str(exc)) for i in asked}
        return [None if base is None else self._compose(base, reranked.get(i)) for i, base in enumerate(bases)]

    def _window(self, ctx: UserContext, base: Ranking) -> UserContext | None:
        """The context the reranker sees: the base's top K of the movies the bridge described."""
        top = [item for item in base.items if item.movie_id in ctx.movies][: self.k]
        if not top:
            return None
        return dataclasses.replace(ctx, candidate_ids=tuple(i.movie_id for i in top),
                                   base_scores={i.movie_id: i.score for i in top},
                                   base_reasons={i.movie_id: i.reason for i in top if i.reason})

    def _compose(self, base: Ranking, reranked: Ranking | None) -> Ranking:
        meta = {"base": self.base.name, **{f"base_{k}": v for k, v in base.meta.items()}}
        if reranked is None or not reranked.items or reranked.meta.get("error"):
            extra = {} if reranked is None else reranked.meta
            return Ranking(base.items, {**extra, **meta, "reranked": 0})
        seen = {item.movie_id for item in reranked.items}
        rest = tuple(item for item in base.items if item.movie_id not in seen)
        return Ranking(reranked.items + rest, {**reranked.meta, **meta, "reranked": len(reranked.items)})

    def close(self) -> None:
        """Releases the reranker's and the base's threads and clients (a later call may start them again)."""
        try:
            self.reranker.close()
        finally:
            self.base.close()


def _failed(error: str, message: str) -> Ranking:
    return Ranking((), {"error": error, "error_message": message})
