"""Serving: score (user, candidate) pairs with a trained checkpoint, features as of now."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .model import CONFIG_FILE, ClickPrompt, ClickPromptConfig
from ...catalog import movie_catalog
from .samples import candidate_samples
from .schema import COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER

__all__ = ["ClickPromptScorer"]

_UNKNOWN_USER = -1  # never in a vocabulary: scores as the OOV user


class ClickPromptScorer:
    """Click probabilities for one user's candidates.

    `use_plm=False` runs only the CTR model (the ClickPrompt CTR-only deployment): the checkpoint must
    have trained a CTR logit (fusion `ctr` or `prefix_add`) and the PLM is never loaded. `use_plm=True`
    runs the checkpoint as trained (fusion `plm`, `prefix` or `prefix_add`).
    """

    def __init__(self, checkpoint_dir: Path | str, use_plm: bool = False, batch_size: int = 256):
        config = ClickPromptConfig.load(Path(checkpoint_dir) / CONFIG_FILE)
        fusion = config.fusion_mode
        if use_plm and not fusion.uses_plm:
            raise ValueError(f"checkpoint {checkpoint_dir} ({config.fusion}) has no PLM to use")
        if not use_plm and not fusion.adds_ctr_logit:
            raise ValueError(f"checkpoint {checkpoint_dir} ({config.fusion}) has no trained CTR logit; "
                             "use a ctr or prefix_add checkpoint, or use_plm=True")
        overrides = {} if use_plm else {"fusion": "ctr"}  # same weights, the PLM branch never built
        self.model = ClickPrompt.load_checkpoint(checkpoint_dir, **overrides).eval()
        self.batch_size = batch_size
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
        if user_id is None:
            ids = history[COL_USER].unique() if COL_USER in history else []
            if len(ids) > 1:
                raise ValueError(f"history rows of {len(ids)} users; score one user at a time")
            user_id = int(ids[0]) if len(ids) else _UNKNOWN_USER
        samples = candidate_samples(user_id, history, candidate_movie_ids, self._catalog_of(movies),
                                    self.model.space.movie_stats)
        if samples.empty:
            return np.zeros(0, dtype=np.float64)
        encoded = self.model.encode(samples, self._catalog_of(movies))
        return np.concatenate([self.model.predict(b).numpy() for b in encoded.batches(self.batch_size)]
                              ).astype(np.float64)

    def _catalog_of(self, movies: pd.DataFrame | Mapping[int, Any]) -> pd.DataFrame:
        # A ranker passes the same movies for every user: parse them once.
        if movies is not self._movies:
            self._movies, self._catalog = movies, movie_catalog(movies)
        return self._catalog


def _history(rows: pd.DataFrame | Iterable[Any]) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows
    return pd.DataFrame([(r.movie_id, r.rating, r.timestamp) for r in rows],
                        columns=[COL_MOVIE, COL_RATING, COL_TIMESTAMP])
