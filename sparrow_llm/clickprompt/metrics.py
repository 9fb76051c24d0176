"""CTR metrics: AUC (ties count one half, as in the Mann-Whitney U statistic) and log loss."""
from __future__ import annotations

import numpy as np

__all__ = ["auc", "log_loss"]

_EPS = 1e-7  # probabilities are clipped so one confident mistake gives a large but finite loss


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    # Average 1-based rank of each group of tied scores.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0 - _EPS)
    return float(-np.mean(labels * np.log(probs) + (1.0 - labels) * np.log1p(-probs)))
