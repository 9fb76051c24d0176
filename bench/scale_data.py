"""Synthetic deploys in the host's layout for bench_scale.py, drawn from the fixture's distributions, seeded.

  catalogue   the fixture's movies, then copies of movies drawn from them under new ids (titles get a
              number before the year), so the genre mix, the titles the host skips (quoted commas), missing
              links and missing embeddings keep the fixture's shares; a copy's item2vec vector is its
              source's plus a little noise. It grows in proportion to the users: the fixture's 982 movies
              per 1,000 users.
  users       each synthetic user takes a fixture user as a template: the template's number of ratings and
              its timestamps (shifted by up to half a year), so the activity and time distributions are the
              fixture's.
  ratings     each rating's movie is drawn by popularity (a copy is as popular as its source was in the
              fixture); its value is drawn from the ratings the source movie got in the fixture.
  userEmb     recomputed the host's way (sum of the rated movies' item vectors / number of ratings).

    python bench/scale_data.py OUT --users 10000 [--seed 0]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sparrow_llm.evaluation.datacopy import read_embeddings
from sparrow_llm.schema import (
    COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_TITLE, COL_USER, ITEM_EMB_CSV, LINKS_CSV, MOVIES_CSV, RATINGS_CSV,
    USER_EMB_CSV,
)

__all__ = ["Deploy", "generate_deploy", "BASE_USERS"]

BASE_USERS = 1000  # the fixture's catalogue serves this many users; it grows in proportion
_HALF_YEAR_S = 183 * 86400
_TITLE = r"^(?P<name>.*?)(?P<year>\s*\(\d{4}\))?\s*$"


@dataclass(frozen=True)
class Deploy:
    path: Path
    users: int
    ratings: int
    movies: int
    loadable_movies: int  # what the host loads: titles without a comma
    wall_s: float

    def line(self) -> str:
        return (f"deploy {self.path.name}: {self.users:,} users, {self.ratings:,} ratings, {self.movies:,} movies "
                f"({self.loadable_movies:,} load in the host), generated in {self.wall_s:.1f} s")


def _spans(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges [start, start + count) without a Python loop."""
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return np.arange(counts.sum()) + offsets


def _catalogue(movies: pd.DataFrame, links: pd.DataFrame, n_movies: int,
               rng) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The fixture's movies and `n_movies - len(movies)` numbered copies; the source row of each."""
    extra = n_movies - len(movies)
    src = np.concatenate([np.arange(len(movies)), rng.integers(0, len(movies), extra)])
    ids = np.concatenate([movies[COL_MOVIE].to_numpy(), movies[COL_MOVIE].max() + 1 + np.arange(extra)])
    parts = movies[COL_TITLE].iloc[src].str.extract(_TITLE)
    copy_no = pd.Series(np.arange(n_movies) // max(1, len(movies)), dtype="int64").astype(str)
    numbered = parts["name"].to_numpy(dtype=object) + np.where(copy_no == "0", "", " " + copy_no)
    titles = numbered + parts["year"].fillna("").to_numpy(dtype=object)
    catalogue = pd.DataFrame({COL_MOVIE: ids, COL_TITLE: titles, "genres": movies["genres"].to_numpy()[src]})
    by_movie = links.set_index(COL_MOVIE).reindex(movies[COL_MOVIE])
    new_links = pd.DataFrame({COL_MOVIE: ids, "imdbId": by_movie["imdbId"].to_numpy()[src],
                              "tmdbId": by_movie["tmdbId"].to_numpy()[src]})
    return catalogue, new_links, src


def _ratings(fixture: pd.DataFrame, movie_ids: np.ndarray, source_ids: np.ndarray, users: int, rng) -> pd.DataFrame:
    """Ratings of `users` synthetic users over the catalogue `movie_ids`, copies of the fixture's `source_ids`."""
    fixture = fixture.sort_values([COL_USER, COL_TIMESTAMP], kind="stable")
    _, user_start, user_count = np.unique(fixture[COL_USER].to_numpy(), return_index=True, return_counts=True)
    template = rng.integers(0, len(user_start), users)
    counts = user_count[template]
    rows = _spans(user_start[template], counts)
    user_ids = np.repeat(np.arange(1, users + 1), counts)
    shift = np.repeat(rng.integers(-_HALF_YEAR_S, _HALF_YEAR_S, users), counts)
    timestamps = fixture[COL_TIMESTAMP].to_numpy()[rows] + shift
    # Popularity: a copy weighs what its source's fixture rating count weighs (half a rating for unrated ones).
    by_movie = fixture.sort_values(COL_MOVIE, kind="stable")
    rated_ids, rated_start, rated_count = np.unique(by_movie[COL_MOVIE].to_numpy(), return_index=True,
                                                    return_counts=True)
    pos = np.clip(np.searchsorted(rated_ids, source_ids), 0, len(rated_ids) - 1)
    rated = rated_ids[pos] == source_ids
    weight = np.where(rated, rated_count[pos], 0.5)
    picked = rng.choice(len(movie_ids), size=len(rows), p=weight / weight.sum())
    # The value: one of the ratings the source movie got in the fixture (any rating for a never-rated one).
    values = by_movie[COL_RATING].to_numpy()
    draw = rng.random(len(rows))
    own = rated[picked]
    index = np.where(own, rated_start[pos[picked]] + (draw * rated_count[pos[picked]]).astype(np.int64),
                     (draw * len(values)).astype(np.int64))
    out = pd.DataFrame({COL_USER: user_ids, COL_MOVIE: movie_ids[picked], COL_RATING: values[index],
                        COL_TIMESTAMP: timestamps})
    return out.drop_duplicates([COL_USER, COL_MOVIE], keep="first")  # a user rates a movie once


def _write_vectors(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = pd.DataFrame(vectors).round(7).astype(str).agg(" ".join, axis=1)
    path.write_text("".join(f"{i}:{v}\n" for i, v in zip(ids, body)))


def generate_deploy(out: Path, users: int, *, fixture: Path, seed: int = 0) -> Deploy:
    """Writes the deploy to `out` (sampledata/, modeldata/, an empty posters/) and describes it."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    movies = pd.read_csv(fixture / MOVIES_CSV)
    links = pd.read_csv(fixture / LINKS_CSV, dtype={"imdbId": str, "tmdbId": str})
    n_movies = max(len(movies), round(len(movies) * users / BASE_USERS))
    catalogue, new_links, src = _catalogue(movies, links, n_movies, rng)
    source_ids = movies[COL_MOVIE].to_numpy()[src]
    ratings = _ratings(pd.read_csv(fixture / RATINGS_CSV), catalogue[COL_MOVIE].to_numpy(), source_ids, users, rng)

    vectors = read_embeddings(fixture / ITEM_EMB_CSV)
    dim = len(next(iter(vectors.values())))
    has = np.array([m in vectors for m in source_ids])
    matrix = np.zeros((n_movies, dim))
    matrix[has] = np.stack([vectors[m] for m in source_ids[has]])
    copies = has & (np.arange(n_movies) >= len(movies))
    matrix[copies] += rng.normal(0, 0.05, (copies.sum(), dim))
    # The host's user vectors: sum of the rated movies' vectors / number of ratings.
    row_of = pd.Series(np.arange(n_movies), index=catalogue[COL_MOVIE].to_numpy())
    rows = row_of.loc[ratings[COL_MOVIE].to_numpy()].to_numpy()
    user_rows = ratings[COL_USER].to_numpy() - 1
    sums = np.stack([np.bincount(user_rows, weights=matrix[rows, d] * has[rows], minlength=users) for d in range(dim)],
                    axis=1)
    rated_with_vector = np.bincount(user_rows, weights=has[rows], minlength=users) > 0
    per_user = np.bincount(user_rows, minlength=users)

    (out / "sampledata").mkdir(parents=True, exist_ok=True)
    (out / "posters").mkdir(exist_ok=True)
    catalogue.to_csv(out / MOVIES_CSV, index=False)
    new_links.to_csv(out / LINKS_CSV, index=False)
    ratings.sort_values([COL_USER, COL_TIMESTAMP], kind="stable").to_csv(out / RATINGS_CSV, index=False)
    _write_vectors(out / ITEM_EMB_CSV, catalogue[COL_MOVIE].to_numpy()[has], matrix[has])
    users_with = np.flatnonzero(rated_with_vector)
    _write_vectors(out / USER_EMB_CSV, users_with + 1, sums[users_with] / per_user[users_with, None])
    loadable = int((~catalogue[COL_TITLE].str.contains(",")).sum())
    return Deploy(out, users, len(ratings), n_movies, loadable, time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixture", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "sparrowrecsys"
                    / "webroot")
    args = ap.parse_args()
    print(generate_deploy(args.out, args.users, fixture=args.fixture, seed=args.seed).line())


if __name__ == "__main__":
    main()
