"""Sample building: the host's schema, the feature definitions, no leakage, the time split, the host reader."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from sparrow_llm.rankers.clickprompt.samples import (
    build_samples, candidate_samples, movie_catalog, movie_stats_now, read_host_samples, time_split,
)
from sparrow_llm.rankers.clickprompt.schema import (
    COL_LABEL, COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER, SAMPLE_COLUMNS, SAMPLE_DTYPES, USER_GENRES,
    USER_RATED_MOVIES,
)

FEATURES = [c for c in SAMPLE_COLUMNS if c not in (COL_MOVIE, COL_USER, COL_RATING, COL_TIMESTAMP, COL_LABEL)]
HOST_HEADER = ("movieId,userId,rating,timestamp,label,releaseYear,movieGenre1,movieGenre2,movieGenre3,"
               "movieRatingCount,movieAvgRating,movieRatingStddev,userRatedMovie1,userRatedMovie2,userRatedMovie3,"
               "userRatedMovie4,userRatedMovie5,userRatingCount,userAvgReleaseYear,userReleaseYearStddev,"
               "userAvgRating,userRatingStddev,userGenre1,userGenre2,userGenre3,userGenre4,userGenre5")

from tests.rankers.clickprompt.conftest import perturbed_future


@pytest.fixture(scope="module")
def samples(tiny_ratings, movies):
    return build_samples(tiny_ratings, movies)


def test_schema_is_the_hosts(samples, tiny_ratings):
    assert ",".join(samples.columns) == HOST_HEADER
    assert samples.dtypes.astype(str).to_dict() == SAMPLE_DTYPES
    assert len(samples) == len(tiny_ratings)
    assert (samples[COL_LABEL] == (samples[COL_RATING] >= 3.5).astype(int)).all()
    assert samples[COL_TIMESTAMP].is_monotonic_increasing


def _reference(ratings: pd.DataFrame, catalog: pd.DataFrame, row: pd.Series) -> dict:
    """The documented definitions, computed the slow, obvious way for one sample."""
    user = ratings[(ratings.userId == row.userId) & (ratings.timestamp < row.timestamp)]
    movie = ratings[(ratings.movieId == row.movieId) & (ratings.timestamp < row.timestamp)]
    liked = user[user.rating >= 3.5].sort_values(["timestamp", "movieId"], ascending=False)
    years = catalog.releaseYear.reindex(user.movieId).astype(float).dropna()
    genres = Counter(g for m in liked.movieId for g in catalog.genres.get(m, ()))
    top = [g for g, _ in sorted(genres.items(), key=lambda kv: (-kv[1], kv[0]))][:5]
    return {
        "movieRatingCount": len(movie), "movieAvgRating": movie.rating.mean() if len(movie) else np.nan,
        "movieRatingStddev": movie.rating.std() if len(movie) > 1 else np.nan,
        "userRatingCount": len(user), "userAvgRating": user.rating.mean() if len(user) else np.nan,
        "userRatingStddev": user.rating.std() if len(user) > 1 else np.nan,
        "userAvgReleaseYear": years.mean() if len(years) else np.nan,
        "userReleaseYearStddev": years.std() if len(years) > 1 else np.nan,
        **dict(zip(USER_RATED_MOVIES, list(liked.movieId[:5]) + [None] * 5)),
        **dict(zip(USER_GENRES, top + [None] * 5)),
    }


def test_features_follow_the_definitions(samples, tiny_ratings, movies):
    catalog = movie_catalog(movies)
    rows = samples.sample(150, random_state=0)
    for _, row in rows.iterrows():
        for col, want in _reference(tiny_ratings, catalog, row).items():
            got = row[col]
            if want is None or (isinstance(want, float) and np.isnan(want)):
                assert pd.isna(got), (col, got)
            elif isinstance(want, str):
                assert got == want, (col, got, want)
            else:
                assert got == pytest.approx(want, abs=1e-9), (col, got, want)


def test_no_leakage_when_the_future_changes(ratings, movies):
    """Perturb every rating at or after t (values, and new ratings at t and later): no feature of a
    sample at or before t may change. t is a second in which one user rated several movies."""
    t, perturbed = perturbed_future(ratings, movies[COL_MOVIE].to_numpy(), 300)

    key = [COL_USER, COL_MOVIE, COL_TIMESTAMP]
    before = build_samples(ratings, movies)
    after = build_samples(perturbed, movies)
    before = before[before[COL_TIMESTAMP] <= t]
    assert (before[COL_TIMESTAMP] == t).sum() >= 2
    merged = before.merge(after, on=key, suffixes=("", "_after"), validate="one_to_one")
    assert len(merged) == len(before)
    for col in FEATURES:
        a, b = merged[col], merged[col + "_after"]
        same = (a == b).fillna(False) | (a.isna() & b.isna())
        assert same.all(), f"{col} changed for {int((~same).sum())} samples at or before t"
    # The perturbation did reach later samples, so the check above could have failed.
    later = after[after[COL_TIMESTAMP] > t].merge(build_samples(ratings, movies), on=key, suffixes=("", "_b"))
    assert not np.allclose(later["userAvgRating"].fillna(0), later["userAvgRating_b"].fillna(0))


def test_same_second_ratings_do_not_see_each_other(movies):
    ratings = pd.DataFrame({
        COL_USER: [1, 1, 1, 2, 2],
        COL_MOVIE: [1, 2, 3, 1, 3],
        COL_RATING: [4.0, 5.0, 2.0, 3.0, 4.5],
        COL_TIMESTAMP: [100, 100, 200, 100, 300],
    })
    s = build_samples(ratings, movies).set_index([COL_USER, COL_MOVIE])
    assert s.loc[(1, 1), "userRatingCount"] == 0 and s.loc[(1, 2), "userRatingCount"] == 0
    assert s.loc[(2, 1), "movieRatingCount"] == 0  # user 1 rated movie 1 in the same second
    later = s.loc[(1, 3)]
    assert later["userRatingCount"] == 2 and later["userAvgRating"] == 4.5
    # Both liked at second 100: the larger movieId counts as the more recent.
    assert [later["userRatedMovie1"], later["userRatedMovie2"]] == [2, 1] and pd.isna(later["userRatedMovie3"])
    assert s.loc[(2, 3), "movieRatingCount"] == 1 and s.loc[(2, 3), "movieAvgRating"] == 2.0
    assert np.isnan(s.loc[(2, 3), "movieRatingStddev"])


def test_time_split_is_disjoint_and_test_is_the_latest_fifth(ratings, movies):
    samples = build_samples(ratings, movies)
    split = time_split(samples)
    train, valid, test = split.train, split.valid, split.test
    assert len(train) + len(valid) + len(test) == len(samples)
    keys = [set(zip(p[COL_USER], p[COL_MOVIE], p[COL_TIMESTAMP])) for p in (train, valid, test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert train[COL_TIMESTAMP].max() < valid[COL_TIMESTAMP].min() <= valid[COL_TIMESTAMP].max() < test[COL_TIMESTAMP].min()
    assert test[COL_TIMESTAMP].min() == split.test_from and valid[COL_TIMESTAMP].min() == split.valid_from
    assert len(test) / len(samples) == pytest.approx(0.2, abs=0.01)
    assert (samples[COL_TIMESTAMP] >= split.test_from).sum() == len(test)  # nothing later is left out
    assert len(valid) / (len(train) + len(valid)) == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ValueError):
        time_split(samples, test_frac=1.0)


def test_reads_the_hosts_sample_file(sampledata):
    host = read_host_samples(sampledata / "testSamples.csv")
    assert tuple(host.columns) == SAMPLE_COLUMNS
    assert host.dtypes.astype(str).to_dict() == SAMPLE_DTYPES
    first = host.iloc[0]
    assert first[COL_MOVIE] == 1 and first[COL_USER] == 14887 and first["movieGenre1"] == "Adventure"
    assert pd.isna(first["userRatedMovie5"]) and first["userRatedMovie4"] == 592


def test_serving_samples_equal_a_sample_after_the_history(tiny_ratings, movies):
    """Features as of now (the scorer's) equal build_samples' for a rating one second after everything."""
    user = int(tiny_ratings[COL_USER].iloc[0])
    candidates = [1, 2, 32, 999_999]
    history = tiny_ratings[tiny_ratings[COL_USER] == user]
    now = int(tiny_ratings[COL_TIMESTAMP].max()) + 1
    probes = pd.DataFrame({COL_USER: user, COL_MOVIE: candidates, COL_RATING: 3.0, COL_TIMESTAMP: now})
    expected = build_samples(pd.concat([tiny_ratings, probes]), movies)
    expected = expected[expected[COL_TIMESTAMP] == now].set_index(COL_MOVIE).loc[candidates]
    got = candidate_samples(user, history, candidates, movie_catalog(movies), movie_stats_now(tiny_ratings))
    pd.testing.assert_frame_equal(got.set_index(COL_MOVIE)[FEATURES], expected[FEATURES])
    assert got[COL_LABEL].isna().all() and got[COL_TIMESTAMP].isna().all()
