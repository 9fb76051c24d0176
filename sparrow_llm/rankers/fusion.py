"""The one fusion of a reranker's scores with its base's, and the one rule that chooses its weight.

Over one user's window (the base's top K): fused = w * z(reranker) + (1 - w) * z(base), each z-standardised
over the window (a constant score standardises to 0), so the two scales never meet, only their spreads.
`weight` is always the reranker's share: 0 serves the base's order exactly (ties keep the window's order,
which is the base's), 1 the reranker's.

A base score missing for a candidate counts as the window's lowest base score; a window with no base score
at all (the host's candidates) is scored by position, -log2(position + 2), as NDCG discounts it.

`choose_weight` picks w on validation samples and cannot pick a loss: the best weight above 0 is taken only
when its paired gain over w = 0 (the base) has a bootstrap lower bound above 0; otherwise w = 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..metrics import bootstrap_mean, ndcg_of_scores

__all__ = ["fuse", "window_base_scores", "position_scores", "choose_weight", "Calibration", "WEIGHTS", "CUT"]

WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))
CUT = 10  # the weight is chosen on NDCG@10, the evaluation's headline metric


def _z(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def position_scores(n: int) -> np.ndarray:
    """Scores of a window known only by its order: what NDCG gives each position."""
    return -np.log2(np.arange(n) + 2.0)


def window_base_scores(window: Sequence[int], base_scores: Mapping[int, float] | None) -> np.ndarray:
    """The base's score of each movie of the window (the missing-score rule of the module docstring)."""
    if not base_scores or not any(m in base_scores for m in window):
        return position_scores(len(window))
    lowest = min(float(base_scores[m]) for m in window if m in base_scores)
    return np.array([float(base_scores.get(m, lowest)) for m in window], dtype=np.float64)


def fuse(reranker: Sequence[float], base: Sequence[float], weight: float) -> np.ndarray:
    """w * z(reranker) + (1 - w) * z(base); at w = 0 the base's order, at w = 1 the reranker's."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    return weight * _z(np.asarray(reranker, dtype=np.float64)) + (1.0 - weight) * _z(np.asarray(base, dtype=np.float64))


@dataclass(frozen=True)
class Calibration:
    weight: float  # the reranker's share, chosen
    table: dict[float, float]  # weight -> validation NDCG@10 of the fused order
    samples: int
    # The paired validation gain of the best weight above 0 over the base: (mean, low, high), None when not measured.
    gain: tuple[float, float, float] | None = field(default=None)

    def __post_init__(self):
        if not 0.0 <= self.weight <= 1.0:  # a hand-edited calibration file, say
            raise ValueError(f"fusion weight must be in [0, 1], got {self.weight:g}")

    @property
    def base_ndcg(self) -> float:
        return self.table[0.0]

    @property
    def reranker_ndcg(self) -> float:
        return self.table[1.0]

    def to_json(self) -> dict:
        data = {"weight": self.weight, "samples": self.samples,
                "ndcg_by_weight": {str(w): v for w, v in self.table.items()}}
        if self.gain is not None:
            data["gain_over_base"] = list(self.gain)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        gain = data.get("gain_over_base")
        return cls(float(data["weight"]), {float(w): float(v) for w, v in data["ndcg_by_weight"].items()},
                   int(data["samples"]), None if gain is None else tuple(float(g) for g in gain))


def choose_weight(reranker_rows: Sequence[Sequence[float]], base_rows: Sequence[Sequence[float]],
                  targets: Sequence[int], *, weights: Sequence[float] = WEIGHTS, seed: int = 0) -> Calibration:
    """The weight of `weights` to serve, from validation rows (one window each; `targets`: the index of the
    movie the user liked next, -1 when it is not in the window). The best weight above 0 by mean NDCG@10
    (ties: the smaller) is served only when its paired bootstrap gain over w = 0 has a lower bound above 0."""
    if 0.0 not in weights:
        raise ValueError("the weights must include 0 (the base's order)")
    per_weight = {w: ndcg_of_scores([fuse(r, b, w) for r, b in zip(reranker_rows, base_rows)], targets, CUT)
                  for w in weights}
    table = {w: float(v.mean()) if len(v) else 0.0 for w, v in per_weight.items()}
    above = [w for w in weights if w > 0]
    if not above or not len(targets):
        return Calibration(0.0, table, len(targets))
    best = max(above, key=lambda w: (round(table[w], 9), -w))
    gain = bootstrap_mean(per_weight[best] - per_weight[0.0], seed=seed)
    chosen = best if gain.low > 0 else 0.0
    return Calibration(chosen, table, len(targets), (gain.mean, gain.low, gain.high))
