"""Ranking metrics, one relevant item per user: the evaluation's (over served lists, with bootstrap intervals)
and the validation's (over scores, as a ranker would serve them).

List metrics take the ranked list and the hidden target; a target missing from the list scores 0 (it was not
recommended), and k larger than the list simply looks at the whole list. An id repeated in a list counts at
its first occurrence.

Score metrics take a row of scores per user (a users x candidates matrix, or a list of rows of any lengths)
and the target's index in each row. The tie rule, the only one in the package: a candidate's position is
its position in the stable descending sort of its row, `np.argsort(-scores, kind="stable")`, the order every
ranker serves; a tie keeps the candidates' order (the lower index first), and NaN scores come last, as
argsort puts them. A target index of -1 (not among the candidates) or an excluded target (a rated movie,
never served) scores 0, and excluded candidates are not ranked at all.

NDCG with one relevant item: DCG = 1 / log2(rank + 1) for a 1-based rank within the cut, IDCG = 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["rank_of", "hit_rate", "ndcg", "reciprocal_rank", "METRICS", "Interval", "bootstrap_mean",
           "bootstrap_difference", "head_movies", "long_tail_share", "coverage", "ranks_of_scores", "ndcg_of_scores",
           "mean_ndcg_of_scores"]


def _gains(ranks: np.ndarray | int, k: int) -> np.ndarray:
    """NDCG@k of 1-based ranks (0: not ranked)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    return np.where((ranks >= 1) & (ranks <= k), 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


def rank_of(ranked: Sequence[int], target: int) -> int | None:
    """1-based position of target in ranked (first occurrence), None if absent."""
    for i, item in enumerate(ranked):
        if item == target:
            return i + 1
    return None


def hit_rate(ranked: Sequence[int], target: int, k: int) -> float:
    r = rank_of(ranked[:k], target)
    return 1.0 if r is not None else 0.0


def ndcg(ranked: Sequence[int], target: int, k: int) -> float:
    return float(_gains(rank_of(ranked, target) or 0, k))


def reciprocal_rank(ranked: Sequence[int], target: int) -> float:
    r = rank_of(ranked, target)
    return 1.0 / r if r is not None else 0.0


METRICS: dict[str, Callable[[Sequence[int], int], float]] = {
    "HR@1": lambda r, t: hit_rate(r, t, 1),
    "HR@5": lambda r, t: hit_rate(r, t, 5),
    "HR@10": lambda r, t: hit_rate(r, t, 10),
    "NDCG@5": lambda r, t: ndcg(r, t, 5),
    "NDCG@10": lambda r, t: ndcg(r, t, 10),
    "MRR": reciprocal_rank,
}


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_mean(values: Sequence[float], *, resamples: int = 1000, alpha: float = 0.05,
                   seed: int = 0) -> Interval:
    """Mean with a percentile bootstrap interval over users."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(v.mean()), float(low), float(high))


def bootstrap_difference(values: Sequence[float], others: Sequence[float], *, resamples: int = 1000,
                         alpha: float = 0.05, seed: int = 0) -> Interval:
    """The mean paired difference `values - others` (one pair per user) with a percentile bootstrap interval:
    users are resampled with both of their values."""
    return bootstrap_mean(np.asarray(values, dtype=np.float64) - np.asarray(others, dtype=np.float64),
                          resamples=resamples, alpha=alpha, seed=seed)


def head_movies(popularity: Mapping[int, int], head_share: float = 0.2) -> set[int]:
    """The `head_share` most rated movies of `popularity` (movie -> ratings; at least one movie, ties in the
    mapping's order); the rest are the long tail."""
    ranked = sorted(popularity, key=lambda m: -popularity[m])
    return set(ranked[: max(1, int(len(ranked) * head_share))])


def long_tail_share(top_lists: Sequence[Sequence[int]], popularity: Mapping[int, int],
                    head_share: float = 0.2) -> float:
    """Share of recommended slots that go to long-tail movies (outside `head_movies`)."""
    head = head_movies(popularity, head_share)
    slots = [m for top in top_lists for m in top]
    return sum(m not in head for m in slots) / len(slots) if slots else 0.0


def coverage(top_lists: Sequence[Sequence[int]], catalogue_size: int) -> float:
    """Share of the catalogue that appears in at least one top list."""
    return len({m for top in top_lists for m in top}) / catalogue_size if catalogue_size else 0.0


def _ranks(scores: np.ndarray, targets: np.ndarray, served: np.ndarray) -> np.ndarray:
    """1-based positions of `targets` in the stable descending sort of each row of `scores` among its `served`
    candidates (0: not ranked)."""
    rows = np.arange(len(targets))
    index = np.arange(scores.shape[1])[None, :]
    present = targets >= 0
    safe = np.where(present, targets, 0)
    target = scores[rows, safe][:, None]
    nan_target = np.isnan(target)
    ahead = np.where(nan_target, ~np.isnan(scores) | (np.isnan(scores) & (index < safe[:, None])),
                     (scores > target) | ((scores == target) & (index < safe[:, None])))
    ranks = (ahead & served).sum(axis=1) + 1
    return np.where(present & served[rows, safe], ranks, 0)


def ranks_of_scores(scores: np.ndarray | Sequence[Sequence[float]], targets: Sequence[int],
                    excluded: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Each row's 1-based rank of its target (`targets`: an index into the row, -1 when it is not among the
    candidates) by the module's tie rule, the candidates of `excluded[row]` (indexes) left out; 0 where the
    target is not ranked."""
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        if len(scores) != len(targets):
            raise ValueError(f"{len(scores)} score rows but {len(targets)} targets")
        served = np.ones(scores.shape, dtype=bool)
        for row, items in enumerate(excluded or ()):
            served[row, np.asarray(items, dtype=np.int64)] = False
        return _ranks(np.asarray(scores, dtype=np.float64), targets, served)
    rows = list(scores)
    if len(rows) != len(targets):
        raise ValueError(f"{len(rows)} score rows but {len(targets)} targets")
    excluded = list(excluded) if excluded is not None else [()] * len(rows)
    return np.array([ranks_of_scores(np.asarray(row, dtype=np.float64).reshape(1, -1), [t], [skip])[0]
                     for row, t, skip in zip(rows, targets, excluded)], dtype=np.int64)


def ndcg_of_scores(scores: np.ndarray | Sequence[Sequence[float]], targets: Sequence[int], k: int = 10,
                   excluded: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Each row's NDCG@k of its target (see `ranks_of_scores` for the arguments); 0 where it is not ranked."""
    return _gains(ranks_of_scores(scores, targets, excluded), k)


def mean_ndcg_of_scores(scores: np.ndarray | Sequence[Sequence[float]], targets: Sequence[int], k: int = 10,
                        excluded: Sequence[Sequence[int]] | None = None) -> float:
    """The mean of `ndcg_of_scores` over the rows; NaN without rows."""
    values = ndcg_of_scores(scores, targets, k, excluded)
    return float(values.mean()) if values.size else float("nan")
