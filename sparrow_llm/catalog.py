"""The host's movies.csv read the way every stage reads it: title, release year and genres per movie."""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import pandas as pd

from .schema import COL_GENRES, COL_MOVIE, COL_RELEASE_YEAR, COL_TITLE, NO_GENRES

__all__ = ["movie_catalog"]

# A title's trailing "(YYYY)".
YEAR_RE = re.compile(r"\s*\((\d{4})\)\s*$")


def movie_catalog(movies: pd.DataFrame | Mapping[int, Any]) -> pd.DataFrame:
    """Movies indexed by movieId: `title` (year stripped), `releaseYear` (Int64), `genres` (tuple).

    Takes movies.csv as a frame, or the bridge's `{movieId: MovieMeta}` (title already stripped,
    release_year 0 when unknown).
    """
    if isinstance(movies, pd.DataFrame):
        titles = movies[COL_TITLE].fillna("").astype(str)
        years = titles.str.extract(YEAR_RE, expand=False)
        frame = pd.DataFrame({
            COL_TITLE: titles.str.replace(YEAR_RE, "", regex=True).str.strip().to_numpy(),
            COL_RELEASE_YEAR: pd.array(pd.to_numeric(years), dtype="Int64"),
            COL_GENRES: [_genres(g.split("|") if isinstance(g, str) else ()) for g in movies[COL_GENRES]],
        }, index=pd.Index(movies[COL_MOVIE].astype("int64").to_numpy(), name=COL_MOVIE))
    else:
        metas = list(movies.values())
        frame = pd.DataFrame({
            COL_TITLE: [m.title for m in metas],
            COL_RELEASE_YEAR: pd.array([m.release_year or None for m in metas], dtype="Int64"),
            COL_GENRES: [_genres(m.genres) for m in metas],
        }, index=pd.Index([int(m.movie_id) for m in metas], dtype="int64", name=COL_MOVIE))
    return frame[~frame.index.duplicated(keep="first")]


def _genres(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(g for g in (n.strip() for n in names) if g and g != NO_GENRES)
