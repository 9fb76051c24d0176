"""Popularity and EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"), closed form in numpy.

EASE learns an item x item matrix B with a zero diagonal from the Gram matrix G = X'X of the users x items
matrix: P = (G + lambda I)^-1, B = -P / diag(P). A user's scores are their interaction vector times B.
The plain `ease` is binary (every rating is 1). `ease-recent` grades the interactions (a rating below 3.5
weighs `disliked_weight`, 0 leaves it out) and reads the history as a sequence: the user's vector weighs
each interaction by its recency too (1 for the newest, decaying towards a floor). Lambda, the grading and
the recency are chosen on validation (the mean NDCG@10 of the folds of `interactions.folds`). Memory is O(items^2): fine for a host's catalogue of
thousands of movies, not for millions.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from safetensors.numpy import load_file, save_file

from ...config import ConfigError
from ..pretrained import WEIGHTS_FILE, PretrainedModel
from .configuration import EASE, POPULARITY, LinearConfig
from .interactions import Catalogue, Fold, History, interaction_matrix, ndcg_at, popularity_counts

__all__ = ["LinearModel", "check_ease_memory", "available_memory", "EASE_BYTES_PER_CELL", "Grid", "EASE_GRID", "EASE_RECENT_GRID", "fit_ease", "fit_popularity", "select_ease"]

class LinearModel(PretrainedModel):
    """Scores of every catalogue movie for a batch of histories: counts (popularity) or vector @ B (EASE)."""

    config_class = LinearConfig

    def __init__(self, config: LinearConfig, weights: np.ndarray, movie_ids: np.ndarray):
        self.config, self.weights, self.movie_ids = config, weights, movie_ids

    def reads(self, history: History) -> bool:
        """Whether the history holds anything the model scores from."""
        return bool(len(history.graded(self.config.disliked_weight)[0]))

    def user_vectors(self, histories: Sequence[History]):
        c = self.config
        graded = [h.graded(c.disliked_weight) for h in histories]
        return interaction_matrix([items for items, _ in graded], len(self.movie_ids),
                                  weights=[weights for _, weights in graded], tau=c.recency_tau, floor=c.recency_floor)

    def scores(self, histories: Sequence[History]) -> np.ndarray:
        if self.config.kind == POPULARITY:
            return np.tile(self.weights, (len(histories), 1))
        return np.asarray(self.user_vectors(histories) @ self.weights)

    def _save_weights(self, directory: Path) -> None:
        save_file({"weights": np.ascontiguousarray(self.weights, dtype=np.float32), "movie_ids": self.movie_ids},
                  str(directory / WEIGHTS_FILE))

    @classmethod
    def _from_weights(cls, config: LinearConfig, directory: Path) -> "LinearModel":
        tensors = load_file(str(directory / WEIGHTS_FILE))
        return cls(config, tensors["weights"], tensors["movie_ids"])


def fit_popularity(histories: Sequence[History], catalogue: Catalogue) -> LinearModel:
    return LinearModel(LinearConfig(POPULARITY), popularity_counts([h.items for h in histories], len(catalogue)),
                       catalogue.movie_ids)


# EASE's peak: the float64 Gram matrix and its inverse, and B (float32), items x items each.
EASE_BYTES_PER_CELL = 8 + 8 + 4
EASE_MIN_RATERS = 2


def available_memory() -> int:
    """Bytes this machine can still give without swapping: MemAvailable of /proc/meminfo, else the free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_ease_memory(n_items: int) -> None:
    """One ConfigError, before anything is allocated, when EASE's item x item matrices do not fit in memory."""
    needed, available = n_items * n_items * EASE_BYTES_PER_CELL, available_memory()
    if needed > available:
        raise ConfigError(f"EASE on a catalogue of {n_items} movies needs {needed / 2 ** 30:.1f} GiB for its "
                          f"{n_items} x {n_items} matrices, and {available / 2 ** 30:.1f} GiB of memory is available: "
                          "use a base that scales, SPARROW_LLM_BASE=sasrec (or popularity)")


def fit_ease(histories: Sequence[History], n_items: int, l2: float, disliked_weight: float = 1.0) -> np.ndarray:
    """B of the module docstring (float32, items x items), from the graded interactions without recency."""
    if l2 <= 0:
        raise ValueError(f"EASE needs lambda > 0, got {l2}")
    graded = [h.graded(disliked_weight) for h in histories]
    x = interaction_matrix([items for items, _ in graded], n_items, weights=[weights for _, weights in graded])
    # A movie with fewer than EASE_MIN_RATERS raters co-occurs with almost nothing: it is left out of the
    # inversion and its rows and columns of B stay 0. On ml-latest-small that is a third of the catalogue, and
    # the inversion's cost (items cubed) falls to about a quarter.
    kept = np.flatnonzero(np.asarray((x != 0).sum(axis=0)).ravel() >= EASE_MIN_RATERS)
    x = x[:, kept]
    gram = (x.T @ x).toarray().astype(np.float64)
    diagonal = np.diag_indices(len(kept))
    gram[diagonal] += l2
    p = np.linalg.inv(gram)
    p /= -np.diag(p)
    p[diagonal] = 0.0
    b = np.zeros((n_items, n_items), dtype=np.float32)
    b[np.ix_(kept, kept)] = p
    return b


@dataclass(frozen=True)
class Grid:
    """The EASE configurations tried on validation."""

    l2: tuple[float, ...]
    disliked_weight: tuple[float, ...]
    recency: tuple[tuple[float | None, float], ...]  # (tau, floor); (None, 0): no recency weighting


# The plain baseline: binary interactions, lambda only.
EASE_GRID = Grid((50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0), (1.0,), ((None, 0.0),))
EASE_RECENT_GRID = Grid((50.0, 100.0, 200.0, 500.0), (0.0, 0.25, 0.5, 1.0),
                        ((None, 0.0), (5.0, 0.3), (10.0, 0.1), (10.0, 0.3), (20.0, 0.3)))


def select_ease(folds: Sequence[Fold], catalogue: Catalogue, grid: Grid,
                step: Callable[[], None] = lambda: None) -> tuple[LinearConfig, list[dict]]:
    """The grid's configuration with the best mean validation NDCG@10 over the folds, and every trial. Each
    fold's EASE is fitted on every user's history before that fold's hold-out, so a validation user's
    held-out movie is never in it. Folds without validation users are skipped; with none at all (a tiny
    data folder) every score is NaN and the grid's first configuration is chosen."""
    folds = [fold for fold in folds if len(fold.valid)] or list(folds[:1])
    scores: dict[LinearConfig, list[float]] = {}
    for l2 in grid.l2:
        for disliked_weight in grid.disliked_weight:
            for fold in folds:
                weights = fit_ease(fold.train, len(catalogue), l2, disliked_weight)
                for tau, floor in grid.recency:
                    config = LinearConfig(EASE, l2, disliked_weight, tau, floor)
                    model = LinearModel(config, weights, catalogue.movie_ids)
                    scores.setdefault(config, []).append(
                        ndcg_at(model.scores(fold.valid.histories), fold.valid.rated, fold.valid.targets))
            step()
    trials = [{**asdict(c), "valid_ndcg10": float(np.mean(v)), "folds": v} for c, v in scores.items()]
    best = max(scores, key=lambda c: np.mean(scores[c]))
    return best, trials
