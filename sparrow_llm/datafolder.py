"""A host-layout data folder: its ratings and movies, and a key of their content.

Anything trained for a data folder (ClickPrompt's checkpoint, the retrieval models) is kept under that
key, so a checkpoint never serves other data (the evaluation's copy without the hidden ratings differs).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from .config import ConfigError
from .schema import MOVIES_CSV, RATINGS_CSV

__all__ = ["data_key", "file_hash", "read_data_folder"]

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
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")  # "ab"+"c" and "a"+"bc" must differ
    return digest.hexdigest()


def read_data_folder(webroot: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ratings.csv and movies.csv of a host-layout data folder."""
    data_key(webroot)  # a clear error when a file is missing
    return pd.read_csv(webroot / RATINGS_CSV), pd.read_csv(webroot / MOVIES_CSV)
