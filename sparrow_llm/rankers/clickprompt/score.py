"""Serving: score (user, candidate) pairs with a trained checkpoint, features as of now."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .features import EncodedSamples
from .configuration import ClickPromptConfig
from .model import ClickPrompt
from .pairs import PairScorer
from ...catalog import movie_catalog
from .samples import candidate_samples, movie_rows, user_rows
from .schema import COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER, MOVIE_FIELDS, USER_FIELDS

__all__ = ["ClickPromptScorer", "UserQuery"]

_UNKNOWN_USER = -1  # never in a vocabulary: scores as the OOV user

# One user to score: (userId or None, history rows as `ClickPromptScorer.score` takes them, candidate movieIds).
UserQuery = tuple[int | None, "pd.DataFrame | Iterable[Any]", Sequence[int]]


class ClickPromptScorer:
    """Click probabilities of candidates: one user's (`score`, from the samples training builds) or a batch's
    (`score_many`, the same values, vectorised: what the ranker serves with).

    `use_plm=False` runs only the CTR model (the ClickPrompt CTR-only deployment): the checkpoint must
    have trained a CTR logit (fusion `ctr` or `prefix_add`) and the PLM is never loaded. `use_plm=True`
    runs the checkpoint as trained (fusion `plm`, `prefix` or `prefix_add`).
    """

    def __init__(self, checkpoint_dir: Path | str, use_plm: bool = False, batch_size: int = 256):
        config = ClickPromptConfig.from_pretrained(checkpoint_dir)
        fusion = config.fusion_mode
        if use_plm and not fusion.uses_plm:
            raise ValueError(f"checkpoint {checkpoint_dir} ({config.fusion}) has no PLM to use")
        if not use_plm and not fusion.adds_ctr_logit:
            raise ValueError(f"checkpoint {checkpoint_dir} ({config.fusion}) has no trained CTR logit; "
                             "use a ctr or prefix_add checkpoint, or use_plm=True")
        overrides = {} if use_plm else {"fusion": "ctr"}  # same weights, the PLM branch never built
        self._setup(ClickPrompt.from_pretrained(checkpoint_dir, **overrides).eval(), batch_size)

    @classmethod
    def for_model(cls, model: ClickPrompt, movie_stats: pd.DataFrame | None = None,
                  batch_size: int = 256) -> "ClickPromptScorer":
        """A scorer of `model` as it is now (validation while training; call `eval()` first), with `movie_stats`
        as the snapshot of "now" (default: the model's, `FeatureSpace.movie_stats`)."""
        scorer = cls.__new__(cls)
        scorer._setup(model, batch_size, movie_stats)
        return scorer

    def _setup(self, model: ClickPrompt, batch_size: int, movie_stats: pd.DataFrame | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.movie_stats = model.space.movie_stats if movie_stats is None else movie_stats
        names = self.model.space.field_names()
        self._user_fields = [i for i, n in enumerate(names) if n in USER_FIELDS]
        self._movie_fields = [i for i, n in enumerate(names) if n in MOVIE_FIELDS]
        self._pairs = (PairScorer(self.model, self._user_fields, self._movie_fields)
                       if PairScorer.supports(self.model) else None)
        self._movies: Any = None
        self._catalog: pd.DataFrame | None = None

    def score(self, user_history_rows: pd.DataFrame | Iterable[Any], candidate_movie_ids: Iterable[int],
              movies: pd.DataFrame | Mapping[int, Any], user_id: int | None = None) -> np.ndarray:
        """Probabilities (float64, candidates' order).

        `user_history_rows`: the user's ratings, a frame with movieId, rating, timestamp (and userId),
        or objects with `movie_id`, `rating`, `timestamp` (the bridge's `UserRating`); may be empty.
        `movies`: movies.csv as a frame, or the bridge's `{movieId: MovieMeta}`. `user_id`: defaults to
        the rows' userId; without one the user scores as unknown. Unknown movies score too (OOV).
        """
        history = _history(user_history_rows)
        samples = candidate_samples(_user_id(history, user_id), history, candidate_movie_ids,
                                    self._catalog_of(movies), self.movie_stats)
        return self._predict(self.model.encode(samples, self._catalog_of(movies)))

    def score_many(self, users: Sequence[UserQuery], movies: pd.DataFrame | Mapping[int, Any]) -> list[np.ndarray]:
        """`score` of many users at once, the same values: each user's features are built once (not once per
        candidate), each movie's once per call, both vectorised over all users, then one model pass over every
        (user, candidate) pair. A checkpoint that reads text scores user by user (its text is per sample)."""
        if not users:
            return []
        if self.model.fusion.uses_plm:
            return [self.score(history, candidates, movies, user_id=user) for user, history, candidates in users]
        catalog, space = self._catalog_of(movies), self.model.space
        user_ids = np.array([_user_id(history, user) for user, history, _ in users], dtype=np.int64)
        columns = [_history_columns(history) for _, history, _ in users]
        # Histories are keyed by position: the same user listed twice must not see both copies.
        history = pd.DataFrame({name: np.concatenate([np.zeros(0), *(c[i] for c in columns)])
                                for i, name in enumerate((COL_MOVIE, COL_RATING, COL_TIMESTAMP))})
        history[COL_USER] = np.repeat(np.arange(len(users)), [len(c[0]) for c in columns])
        user_cat = space.encode(user_rows(history, np.arange(len(users)), user_ids, catalog), only=USER_FIELDS)
        candidates = [np.asarray(cands, dtype=np.int64).reshape(-1) for _, _, cands in users]
        counts = [len(c) for c in candidates]
        movie_ids, pair_movie = np.unique(np.concatenate([np.zeros(0, np.int64), *candidates]), return_inverse=True)
        movie_cat = space.encode(movie_rows(movie_ids, catalog, self.movie_stats), only=MOVIE_FIELDS)
        pair_user = np.repeat(np.arange(len(users)), counts)
        if self._pairs is not None:
            probs = self._pairs.predict(user_cat, movie_cat, pair_user, pair_movie)
        else:
            cat = np.empty((len(pair_movie), len(space.field_names())), dtype=np.int64)
            cat[:, self._user_fields], cat[:, self._movie_fields] = user_cat[pair_user], movie_cat[pair_movie]
            probs = self._predict(EncodedSamples(cat, np.full(len(cat), np.nan, dtype=np.float32)))
        return np.split(probs, np.cumsum(counts)[:-1])

    def _predict(self, encoded: EncodedSamples) -> np.ndarray:
        if len(encoded) == 0:
            return np.zeros(0, dtype=np.float64)
        return np.concatenate([self.model.predict(b).numpy() for b in encoded.batches(self.batch_size)]
                              ).astype(np.float64)

    def _catalog_of(self, movies: pd.DataFrame | Mapping[int, Any]) -> pd.DataFrame:
        # A ranker passes the same movies for every user: parse them once.
        if movies is not self._movies:
            self._movies, self._catalog = movies, movie_catalog(movies)
        return self._catalog


def _user_id(history: pd.DataFrame | Iterable[Any], user_id: int | None) -> int:
    """`user_id`, else the history frame's one userId, else the unknown user."""
    if user_id is not None:
        return int(user_id)
    ids = history[COL_USER].unique() if isinstance(history, pd.DataFrame) and COL_USER in history else []
    if len(ids) > 1:
        raise ValueError(f"history rows of {len(ids)} users; score one user at a time")
    return int(ids[0]) if len(ids) else _UNKNOWN_USER


def _history_columns(rows: pd.DataFrame | Iterable[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """movieId, rating, timestamp arrays of history rows (`score`'s kinds), without a frame per user."""
    if isinstance(rows, pd.DataFrame):
        return rows[COL_MOVIE].to_numpy(), rows[COL_RATING].to_numpy(), rows[COL_TIMESTAMP].to_numpy()
    table = [(r.movie_id, r.rating, r.timestamp) for r in rows]
    return tuple(np.array(c) for c in zip(*table)) if table else (np.zeros(0),) * 3  # type: ignore[return-value]


def _history(rows: pd.DataFrame | Iterable[Any]) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows
    return pd.DataFrame([(r.movie_id, r.rating, r.timestamp) for r in rows],
                        columns=[COL_MOVIE, COL_RATING, COL_TIMESTAMP])
