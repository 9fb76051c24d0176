"""The served order: the LLM's score fused with the base ranker's, at a weight chosen on validation users.

Within the window the LLM scored, fused = w * z(LLM) + (1 - w) * z(base), each z-normalised over the
window. The base's score is `UserContext.base_scores` where the pipeline gives one, else the position in the
base's (the host's) order, worth what NDCG gives a position (-log2(rank + 1)). `choose_weight` picks w on
validation samples; w = 0 serves the base's order unchanged, so a weight chosen this way cannot make the
validation lists worse than the base's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from sklearn.metrics import ndcg_score

__all__ = ["fuse", "base_window_scores", "choose_weight", "Calibration", "WEIGHTS", "ndcg_at_10"]

WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))


def _z(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def base_window_scores(window: Sequence[int], base_scores: Mapping[int, float] | None) -> np.ndarray:
    """The base's score of each movie of the window: its own, else one from its position."""
    if base_scores is not None and all(m in base_scores for m in window):
        return np.array([float(base_scores[m]) for m in window])
    return -np.log2(np.arange(len(window)) + 2.0)


def fuse(llm: Sequence[float], base: Sequence[float], weight: float) -> np.ndarray:
    """w * z(llm) + (1 - w) * z(base); at w = 0 the base's order, at w = 1 the LLM's."""
    return weight * _z(np.asarray(llm, dtype=float)) + (1.0 - weight) * _z(np.asarray(base, dtype=float))


def ndcg_at_10(scores: Sequence[np.ndarray], labels: Sequence[int]) -> float:
    """Mean NDCG@10 of one relevant candidate per row (`labels`: its index; -1: not among them, 0)."""
    values = []
    for row, label in zip(scores, labels):
        if label < 0:
            values.append(0.0)
            continue
        truth = np.zeros((1, len(row)))
        truth[0, label] = 1.0
        values.append(float(ndcg_score(truth, np.asarray(row, dtype=float)[None, :], k=10)))
    return float(np.mean(values)) if values else 0.0


@dataclass(frozen=True)
class Calibration:
    weight: float
    table: dict[float, float]  # weight -> validation NDCG@10 of the fused order
    samples: int

    @property
    def base_ndcg(self) -> float:
        return self.table[0.0]

    @property
    def llm_ndcg(self) -> float:
        return self.table[1.0]

    def to_json(self) -> dict:
        return {"weight": self.weight, "samples": self.samples, "ndcg_by_weight": {str(w): v for w, v in self.table.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        return cls(float(data["weight"]), {float(w): float(v) for w, v in data["ndcg_by_weight"].items()},
                   int(data["samples"]))


def choose_weight(llm_scores: Sequence[Sequence[float]], base_scores: Sequence[Sequence[float]],
                  labels: Sequence[int]) -> Calibration:
    """The weight of `WEIGHTS` with the best validation NDCG@10; a tie goes to the smaller weight (the base)."""
    table = {w: ndcg_at_10([fuse(l, b, w) for l, b in zip(llm_scores, base_scores)], labels) for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: (round(table[w], 9), -w))
    return Calibration(best, table, len(labels))
