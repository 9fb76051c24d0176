"""Interactions as the retrieval models read them: the catalogue's indexes, user histories, the validation set.

Implicit feedback: every rated movie is an interaction; `liked` (rating >= 3.5, the host's label) is the
stricter choice a model may be configured with (`INTERACTIONS`), and EASE may weigh the other ratings less
(`History.graded`). Movies outside the data folder's movies.csv
cannot be served, so they are dropped from histories and never scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ...datafolder import MIN_HISTORY
from ...domain import UserRating
from ...metrics import mean_ndcg_of_scores
from ...schema import COL_MOVIE, COL_TITLE, LIKED_RATING
from .samples import COL_MOVIES, COL_RATINGS, COL_TIMESTAMPS, holdout

__all__ = ["Catalogue", "History", "ValidationSet", "Fold", "INTERACTIONS", "interaction_matrix", "recency_weights",
           "histories", "folds", "ndcg_at", "cooccurrence", "popularity_counts", "VALID_CUT",
           "CONFIG_FILE", "WEIGHTS_FILE"]

INTERACTIONS = ("all", "liked")
# Every model folder: its config and its weights (safetensors), as transformers names them.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VALID_CUT = 10  # models are chosen on NDCG@10, the evaluation's headline metric


@dataclass(frozen=True)
class Catalogue:
    """The data folder's movies: the order of every model's item axis."""

    movie_ids: np.ndarray  # sorted, int64
    titles: tuple[str, ...]  # movies.csv's titles, year included

    @classmethod
    def from_movies(cls, movies: pd.DataFrame) -> "Catalogue":
        frame = movies.drop_duplicates(COL_MOVIE).sort_values(COL_MOVIE)
        return cls(frame[COL_MOVIE].to_numpy(np.int64), tuple(frame[COL_TITLE].fillna("").astype(str)))

    def __len__(self) -> int:
        return len(self.movie_ids)

    def index(self, movie_ids: Iterable[int]) -> np.ndarray:
        """Catalogue indexes of `movie_ids`, -1 for movies outside it."""
        ids = np.fromiter(movie_ids, dtype=np.int64)
        pos = np.searchsorted(self.movie_ids, ids)
        found = (pos < len(self.movie_ids)) & (self.movie_ids[np.minimum(pos, len(self.movie_ids) - 1)] == ids)
        return np.where(found, pos, -1)


@dataclass(frozen=True)
class History:
    """One user's ratings of catalogue movies, oldest first."""

    items: np.ndarray  # catalogue indexes
    ratings: np.ndarray

    @classmethod
    def build(cls, catalogue: Catalogue, movie_ids: Sequence[int], ratings: Sequence[float]) -> "History":
        items = catalogue.index(movie_ids)
        known = items >= 0
        return cls(items[known], np.asarray(ratings, dtype=np.float64)[known])

    @classmethod
    def from_ratings(cls, catalogue: Catalogue, ratings: Sequence[UserRating]) -> "History":
        """From the bridge's history (already oldest first)."""
        return cls.build(catalogue, [r.movie_id for r in ratings], [r.rating for r in ratings])

    def select(self, interactions: str) -> np.ndarray:
        """The items a sequence model reads: every rated one, or the liked ones only."""
        if interactions not in INTERACTIONS:
            raise ValueError(f"interactions must be one of {INTERACTIONS}, got {interactions!r}")
        return self.items if interactions == "all" else self.liked

    @property
    def liked(self) -> np.ndarray:
        return self.items[self.ratings >= LIKED_RATING]

    def graded(self, disliked_weight: float) -> tuple[np.ndarray, np.ndarray]:
        """(items, weights): a liked rating weighs 1, any other `disliked_weight` (0: left out)."""
        weights = np.where(self.ratings >= LIKED_RATING, 1.0, disliked_weight)
        keep = weights > 0
        return self.items[keep], weights[keep]


def recency_weights(length: int, tau: float | None, floor: float) -> np.ndarray:
    """A weight per position (oldest first): 1 for the newest, decaying as exp(-age/tau) towards `floor`;
    all ones without `tau`."""
    if tau is None:
        return np.ones(length)
    age = np.arange(length - 1, -1, -1, dtype=np.float64)
    return floor + (1.0 - floor) * np.exp(-age / tau)


def interaction_matrix(item_lists: Sequence[np.ndarray], n_items: int, *, weights: Sequence[np.ndarray] | None = None,
                       tau: float | None = None, floor: float = 0.0) -> sparse.csr_matrix:
    """Users x items; an entry is the weight (default 1) times the recency weight of the item's latest position
    in the user's list."""
    rows, cols, vals = [], [], []
    for row, items in enumerate(item_lists):
        scale = recency_weights(len(items), tau, floor) * (1.0 if weights is None else weights[row])
        latest = {int(i): w for i, w in zip(items, scale)}  # later positions overwrite earlier ones
        rows += [row] * len(latest)
        cols += list(latest)
        vals += list(latest.values())
    return sparse.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(item_lists), n_items))


def histories(sequences: pd.DataFrame, catalogue: Catalogue) -> list[History]:
    """Every user's whole history from the samples."""
    return [History.build(catalogue, m, r) for m, r in zip(sequences[COL_MOVIES], sequences[COL_RATINGS])]


@dataclass(frozen=True)
class ValidationSet:
    """The users a model is chosen on: their training histories and held-out movies (catalogue indexes)."""

    histories: list[History]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def rated(self) -> list[np.ndarray]:
        return [h.items for h in self.histories]


@dataclass(frozen=True)
class Fold:
    """One validation step: every user's history before their hold-out, and the users validated on."""

    train: list[History]
    valid: ValidationSet


def folds(sequences: pd.DataFrame, catalogue: Catalogue, n: int, min_history: int = MIN_HISTORY) -> list[Fold]:
    """`n` validation folds, the latest first: fold k holds out each user's last liked rating of what folds
    before it left (`samples.holdout`). Validated users have a held-out movie in the catalogue and at least
    `min_history` training ratings of catalogue movies: the evaluation's eligibility, k steps earlier."""
    rows = [(np.asarray(m, dtype=np.int64), np.asarray(r, dtype=np.float64), np.asarray(t, dtype=np.int64))
            for m, r, t in zip(sequences[COL_MOVIES], sequences[COL_RATINGS], sequences[COL_TIMESTAMPS])]
    out = []
    for _ in range(n):
        split = [holdout(*row) for row in rows]
        rows = [(m[keep], r[keep], t[keep]) for (m, r, t), (keep, _) in zip(rows, split)]
        train = [History.build(catalogue, m, r) for m, r, _ in rows]
        targets = catalogue.index([-1 if hidden is None else hidden for _, hidden in split])
        chosen = [i for i, (h, target) in enumerate(zip(train, targets)) if target >= 0 and len(h.items) >= min_history]
        out.append(Fold(train, ValidationSet([train[i] for i in chosen], targets[chosen])))
    return out


def ndcg_at(scores: np.ndarray, rated: Sequence[np.ndarray], targets: np.ndarray, k: int = VALID_CUT) -> float:
    """Mean NDCG@k of the targets in `scores` (users x items), each user's rated items left out; ties are
    broken as the rankers break them (`metrics`' rule: the lower catalogue index first)."""
    return mean_ndcg_of_scores(scores, targets, k, excluded=rated)


def cooccurrence(liked_lists: Sequence[np.ndarray], n_items: int) -> sparse.csc_matrix:
    """Items x items: how many users liked both (the diagonal: how many liked the item). Column j is read
    when a reason is given for recommending j."""
    liked = interaction_matrix(liked_lists, n_items)
    liked.data[:] = 1.0
    return (liked.T @ liked).astype(np.int32).tocsc()


def popularity_counts(item_lists: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """How many users interacted with each item."""
    counts = np.zeros(n_items, dtype=np.float64)
    for items in item_lists:
        counts[np.unique(items)] += 1
    return counts
