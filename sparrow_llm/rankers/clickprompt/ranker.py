"""`clickprompt`: a user's unrated candidates by the ClickPrompt checkpoint's predicted click probability, fused
(`rankers.fusion`) with the ranking the candidates came with: the base ranker's scores, or else the host's order."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ...config import Settings
from ...domain import MovieMeta, RankedItem, Ranking, UserContext, spoken_title
from ...schema import LIKED_RATING
from ...store import Store
from ..base import BaseRanker, Ranker
from ..fusion import fuse, window_base_scores
from .tuning import load_calibration, logits
from .checkpoint import checkpoint_version, serving_checkpoint
from .schema import VOCAB_MOVIE, VOCAB_USER
from .score import ClickPromptScorer

__all__ = ["ClickPromptRanker", "from_settings", "why", "BASE_WEIGHT", "ORDER_WEIGHT", "EXPLAINED"]

# The CTR model's share in `fusion.fuse` (the reranker's weight), chosen on validation users (the best NDCG@10
# of bench/bench_clickprompt_ranking.py): against the base ranker's scores when the candidates carry them (the
# served ranker's is chosen per checkpoint and base, `tuning`), else against the candidates' own order (the
# host's), scored by position as NDCG discounts it.
BASE_WEIGHT = 0.25
ORDER_WEIGHT = 0.9
_UNSEEN = "; movie new to the model"
EXPLAINED = 20  # the list's first movies whose reason says why in words; the rest state the prediction

log = logging.getLogger(__name__)


class ClickPromptRanker(BaseRanker):
    """The user's unrated candidates (the host's, or a base ranker's top K) by predicted click probability, fused
    per user with the ranking they came in (`fusion.fuse`, the CTR logit's share): with `ctx.base_scores` at
    `base_weight`, else with the candidates' order at `order_weight`; ties keep the candidates' order.

    `use_plm=False` serves the CTR model alone (ClickPrompt's CTR-only deployment: a `ctr` or `prefix_add`
    checkpoint); `use_plm=True` runs the checkpoint as trained, MiniLM included (~10 ms per candidate on one core:
    `max_candidates` then keeps it to the first candidates; the stage serves the rest after them in the
    candidates' order). A user without history and movies the model never saw score too (their vocabulary rows
    are the trained "unknown" ones).
    """

    name = "clickprompt"

    def __init__(self, checkpoint: Path | str, *, use_plm: bool = False, max_candidates: int | None = None,
                 batch_size: int = 1024, base_weight: float = BASE_WEIGHT, order_weight: float = ORDER_WEIGHT):
        if max_candidates is not None and max_candidates < 1:
            raise ValueError("max_candidates must be >= 1")
        if not (0.0 <= base_weight <= 1.0 and 0.0 <= order_weight <= 1.0):
            raise ValueError(f"base_weight and order_weight must be in [0, 1], got {base_weight}, {order_weight}")
        self.checkpoint = Path(checkpoint)
        self.scorer = ClickPromptScorer(self.checkpoint, use_plm=use_plm, batch_size=batch_size)
        self.backend = "clickprompt-plm" if use_plm else "clickprompt-ctr"
        self.version = checkpoint_version(self.checkpoint)
        self.max_candidates = max_candidates
        self.base_weight, self.order_weight = base_weight, order_weight
        space = self.scorer.model.space
        self._known_movies = frozenset(space.vocabs[VOCAB_MOVIE])
        self._known_users = frozenset(space.vocabs[VOCAB_USER])

    def rank(self, ctx: UserContext) -> Ranking | None:
        return self.rank_many([ctx])[0]

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        """The whole batch in one scorer call per movie table (contexts of one bulk fetch share theirs)."""
        candidates = [ctx.unrated_candidates()[: self.max_candidates] for ctx in contexts]
        groups: dict[int, list[int]] = {}
        for i, ctx in enumerate(contexts):
            if candidates[i]:
                groups.setdefault(id(ctx.movies), []).append(i)
        probs: dict[int, np.ndarray] = {}
        for rows in groups.values():
            queries = [(contexts[i].user_id, contexts[i].ratings, candidates[i]) for i in rows]
            probs.update(zip(rows, self.scorer.score_many(queries, contexts[rows[0]].movies)))
        return [self._ranking(ctx, candidates[i], probs[i]) if i in probs else None for i, ctx in enumerate(contexts)]

    def _ranking(self, ctx: UserContext, candidates: list[int], probs: np.ndarray) -> Ranking:
        weight, source = (self.base_weight, "base") if ctx.base_scores else (self.order_weight, "order")
        # Rounded before sorting, so equal stored scores are exactly the ties that keep the candidates' order.
        scores = np.round(fuse(logits(probs), window_base_scores(candidates, ctx.base_scores), weight), 6)
        order = np.argsort(-scores, kind="stable")
        # Python floats and no call per item: ~700 items a user cost as much as scoring them otherwise.
        ids, stored, shown = np.asarray(candidates)[order].tolist(), scores[order].tolist(), np.round(probs[order], 6).tolist()
        known = self._known_movies
        liked = [ctx.movies[r.movie_id] for r in reversed(ctx.ratings)
                 if r.rating >= LIKED_RATING and r.movie_id in ctx.movies]
        # Only what is true of the prediction: why in words for the first movies, its value for the rest, and that
        # an unseen movie scored from its genres, year and statistics alone.
        items = tuple(RankedItem(m, s, (why(ctx.movies[m], liked, p) if pos < EXPLAINED else _chance(p))
                                 + ("" if m in known else _UNSEEN))
                      for pos, (m, s, p) in enumerate(zip(ids, stored, shown)))
        return Ranking(items, {"history": len(ctx.ratings), "known_user": ctx.user_id in self._known_users,
                               "scored": len(candidates), "fused_with": source, "weight": weight})


def why(movie: MovieMeta, liked: list[MovieMeta], prob: float) -> str:
    """The prediction in words: the liked movie nearest to `movie` by shared genres (`liked` newest first, the
    newest on a tie) and the genres they share; else how the movie is rated here (the model's movie statistics);
    else the prediction's value."""
    shared, nearest = max(((len(set(movie.genres) & set(m.genres)), m) for m in liked), key=lambda t: t[0],
                          default=(0, None))
    if nearest is not None and shared:
        genres = ", ".join(g for g in movie.genres if g in nearest.genres)
        return f"close to {spoken_title(nearest)}, which you liked ({genres})"
    if movie.rating_number:
        return f"rated {movie.average_rating:.1f} by {movie.rating_number} people here"
    return _chance(prob)


def _chance(prob: float) -> str:
    """The prediction's value in words."""
    return f"a {prob:.0%} chance you will like it, by your ratings so far"


def from_settings(settings: Settings, store: Store | None, base: Ranker | None, *,
                  checkpoint: Path | str | None = None, use_plm: bool = False,
                  max_candidates: int | None = None, weight: float | None = None) -> ClickPromptRanker:
    """The registry's factory of the `clickprompt` reranker over `serving_checkpoint` (the registry composes it
    with `base`; the model keeps no cache, so the store is not used). `weight`: the CTR model's share in the
    fusion; by default the one chosen on validation users for this checkpoint and base (`tuning`), or the
    base's order (0) when none was chosen; without a base, `ORDER_WEIGHT`."""
    path = serving_checkpoint(settings, checkpoint)
    if weight is None and base is not None:
        calibration = load_calibration(settings, path, base)
        if calibration is None:
            log.warning("clickprompt: no fusion weight chosen for %s over %s (run `sparrow-llm clickprompt prepare`): "
                        "serving the base's order", path.name, base.name)
        weight = 0.0 if calibration is None else calibration.weight
    weights = {} if weight is None else {"base_weight": weight, "order_weight": weight}
    return ClickPromptRanker(path, use_plm=use_plm, max_candidates=max_candidates, **weights)
