"""The retrieval models' samples: each user's ratings in time order, and the validation hold-outs on them.

One row per user (ordered by userId): `movies`, `ratings`, `timestamps`, every rating of the user ordered by
(timestamp, movieId, rating). `samples_spark` builds the same rows in PySpark.

Validation (`holdout`) is the evaluation's leave-last-out (`datafolder.leave_last_out`) applied to the data
folder itself, on one user's sequence: the last rating >= 3.5 is held out, with everything rated at or after
its timestamp and any earlier rating of that movie. Applied again to what is left, it gives an earlier fold.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...schema import COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER, LIKED_RATING

__all__ = ["build_sequences", "read_sequences", "holdout", "COL_MOVIES", "COL_RATINGS", "COL_TIMESTAMPS",
           "SEQUENCE_COLUMNS", "ORDER"]

COL_MOVIES = "movies"
COL_RATINGS = "ratings"
COL_TIMESTAMPS = "timestamps"
SEQUENCE_COLUMNS = [COL_USER, COL_MOVIES, COL_RATINGS, COL_TIMESTAMPS]
ORDER = [COL_TIMESTAMP, COL_MOVIE, COL_RATING]  # within a user: a total order, so Spark and pandas agree


def build_sequences(ratings: pd.DataFrame) -> pd.DataFrame:
    """The rows of the module docstring from a ratings.csv frame."""
    ordered = ratings.astype({COL_USER: "int64", COL_MOVIE: "int64", COL_RATING: "float64", COL_TIMESTAMP: "int64"}
                             ).sort_values([COL_USER, *ORDER], kind="stable")
    grouped = ordered.groupby(COL_USER, sort=True)
    return pd.DataFrame({COL_MOVIES: grouped[COL_MOVIE].agg(list), COL_RATINGS: grouped[COL_RATING].agg(list),
                         COL_TIMESTAMPS: grouped[COL_TIMESTAMP].agg(list)}).reset_index()[SEQUENCE_COLUMNS]


def read_sequences(path: Path | str) -> pd.DataFrame:
    """A `sparrow-llm retrieval samples` output folder (Parquet), as `build_sequences` returns it."""
    frame = pd.read_parquet(path)
    missing = [c for c in SEQUENCE_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"{path} holds no retrieval samples: columns {', '.join(missing)} are missing")
    frame = frame.sort_values(COL_USER, kind="stable").reset_index(drop=True)
    for col in (COL_MOVIES, COL_RATINGS, COL_TIMESTAMPS):
        frame[col] = [list(v) for v in frame[col]]
    return frame[SEQUENCE_COLUMNS]


def holdout(movies: np.ndarray, ratings: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, int | None]:
    """One user's sequence (in `ORDER`): the mask of what stays for training, and the held-out movie (None
    when the user liked nothing: everything stays)."""
    liked = np.flatnonzero(ratings >= LIKED_RATING)
    if not len(liked):
        return np.ones(len(movies), dtype=bool), None
    last = liked[-1]  # the sequence is ordered, so this is the largest (timestamp, movieId) liked
    return (timestamps < timestamps[last]) & (movies != movies[last]), int(movies[last])
