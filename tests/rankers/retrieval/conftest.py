"""A tiny host-layout data folder for the retrieval models: 8 movies, 14 users, ratings in time order."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sparrow_llm import schema
from sparrow_llm.config import Settings

MOVIES = {m: f"Movie {m} (200{m})" for m in range(1, 9)}


def tiny_ratings() -> pd.DataFrame:
    """Users 1-12 watch 6 (rated 3), then 1 -> 2 -> 3 -> 4 (liked) with a disliked 8 between; users 13-14
    like 5 -> 6 -> 7. Every user's timestamps are distinct, so the hold-outs are unambiguous: users 1-12 are
    validated on movie 4 after five ratings."""
    rows = []
    for user in range(1, 13):
        for step, (movie, rating) in enumerate([(6, 3.0), (1, 4.0), (2, 4.5), (8, 2.0), (3, 4.0), (4, 5.0)]):
            rows.append((user, movie, rating, 1000 * user + step))
    for user in (13, 14):
        for step, movie in enumerate((5, 6, 7)):
            rows.append((user, movie, 4.0, 1000 * user + step))
    return pd.DataFrame(rows, columns=[schema.COL_USER, schema.COL_MOVIE, schema.COL_RATING, schema.COL_TIMESTAMP])


def write_folder(root: Path, ratings: pd.DataFrame) -> Path:
    (root / "sampledata").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({schema.COL_MOVIE: list(MOVIES), schema.COL_TITLE: list(MOVIES.values()),
                  schema.COL_GENRES: "Drama"}).to_csv(root / schema.MOVIES_CSV, index=False)
    ratings.to_csv(root / schema.RATINGS_CSV, index=False)
    return root


@pytest.fixture()
def tiny_settings(tmp_path) -> Settings:
    """Settings over the tiny folder, with a private work dir (where the models are kept)."""
    data = write_folder(tmp_path / "data", tiny_ratings())
    return Settings().replace(host={"data_dir": data, "work_dir": tmp_path / "work"})
