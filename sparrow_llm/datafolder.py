"""A host-layout data folder: its ratings and movies, and a key of their content.

Anything trained for a data folder (ClickPrompt's checkpoint, the retrieval models) is kept under that
key, so a checkpoint never serves other data (the evaluation's copy without the hidden ratings differs).
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from typing import Mapping

import numpy as np
import pandas as pd

from .config import ConfigError
from .publish import staged_folder
from .schema import (COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER, ITEM_EMB_CSV, LIKED_RATING, MOVIES_CSV,
                     RATINGS_CSV)

__all__ = ["data_key", "file_hash", "read_data_csv", "read_data_folder", "Holdout", "leave_last_out", "cut_folder",
           "MIN_HISTORY"]

# The evaluation's (and the retrieval models' validation's) least history a user needs before the hidden movie.
MIN_HISTORY = 5

_HASH_CHUNK = 1 << 20


def data_key(webroot: Path | str) -> str:
    """A short hash of the data folder's ratings.csv and movies.csv contents."""
    webroot = Path(webroot)
    files = [webroot / RATINGS_CSV, webroot / MOVIES_CSV]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"the data folder lacks {', '.join(missing)}")
    return file_hash(*files)[:16]


def file_hash(*paths: Path) -> str:
    """sha256 of the files' contents in order, kept per process while every file's size and mtime stay the
    same: checkpoints, data keys and model keys hash the same large files (a 95 MB ratings.csv, the GGUF
    model) every time a ranker is built."""
    stats = [(os.path.realpath(p), os.stat(p)) for p in paths]
    return _content_hash(tuple((path, st.st_size, st.st_mtime_ns) for path, st in stats))


@functools.lru_cache(maxsize=256)
def _content_hash(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _size, _mtime_ns in files:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")  # "ab"+"c" and "a"+"bc" must differ
    return digest.hexdigest()


def read_data_csv(path: Path, **options) -> pd.DataFrame:
    """A CSV of the data folder (`pd.read_csv` with `options`); an empty or malformed file is one ConfigError
    naming the file and the cause (for a malformed line, its number)."""
    try:
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path}: the file is empty (not even a header line)") from None
    except pd.errors.ParserError as exc:
        cause = str(exc).strip().removeprefix("Error tokenizing data. C error: ")
        raise ConfigError(f"{path}: not a valid CSV file ({cause})") from None


def read_data_folder(webroot: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ratings.csv and movies.csv of a host-layout data folder."""
    data_key(webroot)  # a clear error when a file is missing
    return read_data_csv(webroot / RATINGS_CSV), read_data_csv(webroot / MOVIES_CSV)


@dataclass(frozen=True)
class Holdout:
    user_id: int
    movie_id: int
    timestamp: int
    history_size: int  # the user's ratings left in the copy


def leave_last_out(ratings: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, Holdout]]:
    """The reduced ratings (source order kept) and each user's hidden rating: the last rating >= 3.5 by
    (timestamp, movieId); everything the user rated at or after its timestamp, and any earlier rating of
    the hidden movie, is dropped (the evaluation's protocol, `evaluation.run`'s docstring)."""
    liked = ratings[ratings[COL_RATING] >= LIKED_RATING]
    last = (liked.sort_values([COL_USER, COL_TIMESTAMP, COL_MOVIE])
            .groupby(COL_USER).tail(1).set_index(COL_USER))
    cut = ratings[COL_USER].map(last[COL_TIMESTAMP])  # NaN: no liked rating, all kept
    hidden = ratings[COL_USER].map(last[COL_MOVIE])
    keep = cut.isna() | ((ratings[COL_TIMESTAMP] < cut) & (ratings[COL_MOVIE] != hidden))
    reduced = ratings[keep]
    sizes = reduced.groupby(COL_USER).size()
    holdouts = {int(u): Holdout(int(u), int(row[COL_MOVIE]), int(row[COL_TIMESTAMP]), int(sizes.get(u, 0)))
                for u, row in last.iterrows()}
    return reduced, holdouts


def cut_folder(webroot: Path, folder: Path, cut: Mapping[int, int]) -> Path:
    """`folder`, made once: `webroot`'s ratings without the ratings each user of `cut` made at or after their
    timestamp there; movies and item2vec vectors linked. Built in a temporary folder renamed into place."""
    if (folder / RATINGS_CSV).is_file():
        return folder
    ratings = read_data_csv(webroot / RATINGS_CSV)
    ends = ratings[COL_USER].map(cut).fillna(np.inf)
    # Published whole (`publish.staged_folder`); a process that made the same folder first keeps its own.
    with staged_folder(folder, keep_existing=lambda f: (f / RATINGS_CSV).is_file()) as staging:
        (staging / RATINGS_CSV).parent.mkdir(parents=True)
        ratings[ratings[COL_TIMESTAMP] < ends].to_csv(staging / RATINGS_CSV, index=False)
        for rel in (MOVIES_CSV, ITEM_EMB_CSV):
            if (webroot / rel).is_file():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).symlink_to((webroot / rel).resolve())
    return folder
