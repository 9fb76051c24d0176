"""Ranking metrics for leave-last-out evaluation, with bootstrap confidence intervals.

Each per-user function takes the ranked list and the hidden target; a target missing from the list
scores 0 (it was not recommended), and k larger than the list simply looks at the whole list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["rank_of", "hit_rate", "ndcg", "reciprocal_rank", "METRICS", "Interval", "bootstrap_mean",
           "long_tail_share", "coverage"]


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
    """One relevant item: DCG = 1/log2(rank+1), IDCG = 1."""
    r = rank_of(ranked[:k], target)
    return 1.0 / math.log2(r + 1) if r is not None else 0.0


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


def long_tail_share(top_lists: Sequence[Sequence[int]], popularity: Mapping[int, int],
                    head_share: float = 0.2) -> float:
    """Share of recommended slots that go to long-tail movies (outside the top `head_share` by ratings)."""
    ranked = sorted(popularity, key=lambda m: -popularity[m])
    head = set(ranked[: max(1, int(len(ranked) * head_share))])
    slots = [m for top in top_lists for m in top]
    return sum(m not in head for m in slots) / len(slots) if slots else 0.0


def coverage(top_lists: Sequence[Sequence[int]], catalogue_size: int) -> float:
    """Share of the catalogue that appears in at least one top list."""
    return len({m for top in top_lists for m in top}) / catalogue_size if catalogue_size else 0.0
