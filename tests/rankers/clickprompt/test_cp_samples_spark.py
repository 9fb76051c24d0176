"""The PySpark sample job: parity with the pandas builder, no leakage, the time split, the written output.

One SparkSession (`local[2]`) serves the whole module; the data are a slice of the host fixture (30 users).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparrow_llm.config import ConfigError

from sparrow_llm.rankers.clickprompt.samples import build_samples, read_host_samples, time_split
from sparrow_llm.rankers.clickprompt.schema import (
    COL_GENRES, COL_MOVIE, COL_RATING, COL_RELEASE_YEAR, COL_TIMESTAMP, COL_TITLE, COL_USER, SAMPLE_COLUMNS,
    SAMPLE_DTYPES,
)
from sparrow_llm.rankers.clickprompt.samples_spark import (
    META_FILE, SAMPLE_SCHEMA, SPLITS, build_samples_spark, run_features,
)
from sparrow_llm.spark import read_movies, read_ratings

SLICE_USERS = 30
KEY = [COL_TIMESTAMP, COL_USER, COL_MOVIE]
FEATURES = list(SAMPLE_COLUMNS[SAMPLE_COLUMNS.index(COL_RELEASE_YEAR):])  # everything but ids, rating and label

from tests.rankers.clickprompt.conftest import perturbed_future


@pytest.fixture(scope="module")
def ratings_slice(ratings) -> pd.DataFrame:
    """Every rating of the first users (same-second ratings of one user included)."""
    users = sorted(ratings[COL_USER].unique())[:SLICE_USERS]
    return ratings[ratings[COL_USER].isin(users)].reset_index(drop=True)


@pytest.fixture(scope="module")
def spark_movies(spark, sampledata):
    return read_movies(spark, sampledata / "movies.csv").cache()


def _spark_samples(spark, ratings: pd.DataFrame, spark_movies) -> pd.DataFrame:
    return build_samples_spark(spark.createDataFrame(ratings), spark_movies).toPandas()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY, kind="stable").reset_index(drop=True)


def _assert_same(got: pd.DataFrame, want: pd.DataFrame, columns) -> None:
    """Same values column by column: floats within 1e-9, missing (NaN, NA, None, null) equal to missing."""
    assert len(got) == len(want)
    for col in columns:
        a, b = got[col], want[col]
        if SAMPLE_DTYPES[col] == "object":
            same = a.fillna("<missing>").to_numpy() == b.fillna("<missing>").to_numpy()
        else:
            a, b = a.astype("float64").to_numpy(), b.astype("float64").to_numpy()
            same = np.isclose(a, b, rtol=1e-9, atol=1e-9) | (np.isnan(a) & np.isnan(b))
        assert same.all(), f"{col}: {int((~same).sum())} differ, first at {got.loc[~same, KEY].iloc[0].tolist()}"


def _read_split(folder: Path) -> pd.DataFrame:
    """A written CSV split, its part files in order, through the pandas reader of the host's files."""
    parts = [read_host_samples(p) for p in sorted(folder.glob("part-*.csv"))]
    return pd.concat(parts, ignore_index=True).astype(SAMPLE_DTYPES)


def test_session_settings(spark):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"


def test_reads_quoted_titles_with_commas(spark_movies, movies):
    got = spark_movies.toPandas()
    assert len(got) == len(movies)
    assert got[COL_TITLE].tolist() == movies[COL_TITLE].tolist()
    assert got[COL_TITLE].str.contains(",").sum() > 200  # the titles the host itself skips


def test_parity_with_pandas(spark, ratings_slice, movies, spark_movies):
    got = build_samples_spark(spark.createDataFrame(ratings_slice), spark_movies)
    assert [(f.name, f.dataType) for f in got.schema] == [(f.name, f.dataType) for f in SAMPLE_SCHEMA]
    got, want = _sorted(got.toPandas()), build_samples(ratings_slice, movies)
    assert ratings_slice.duplicated([COL_USER, COL_TIMESTAMP]).any()  # same-second ratings are covered
    assert got[KEY].equals(want[KEY].astype("int64"))
    _assert_same(got, want, SAMPLE_COLUMNS)


@pytest.mark.parametrize("with_catalog", [True, False], ids=["edge_cases", "empty_catalog"])
def test_parity_on_catalog_edge_cases(spark, with_catalog):
    """A repeated movieId (the first row counts), a repeated rating, no year, "(no genres listed)", blanks
    around genres, a rated movie missing from movies.csv, fewer than five liked genres; and no catalog at all."""
    all_movies = pd.DataFrame({
        COL_MOVIE: [1, 1, 2, 3, 4],
        COL_TITLE: ["A (1990)", "A again (2000)", "No year", "Blanks (1985) ", "Comma, The (1999)"],
        COL_GENRES: ["Drama|Comedy", "Horror", "(no genres listed)", " Drama | Action |Crime|Thriller", "Comedy"],
    })
    movies = all_movies if with_catalog else all_movies.iloc[:0]
    ratings = pd.DataFrame({  # user 2 has one rating twice (a repeated row): it counts twice
        COL_USER: [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2],
        COL_MOVIE: [1, 2, 3, 5, 4, 3, 1, 4, 2, 2, 1],
        COL_RATING: [4.0, 4.5, 5.0, 4.0, 1.0, 3.5, 0.5, 4.0, 4.0, 4.0, 3.0],
        COL_TIMESTAMP: [10, 20, 20, 30, 40, 10, 20, 20, 25, 25, 30],
    })
    spark_movies = spark.createDataFrame(all_movies).limit(len(movies))
    got = build_samples_spark(spark.createDataFrame(ratings), spark_movies).toPandas()
    _assert_same(_sorted(got), build_samples(ratings, movies), SAMPLE_COLUMNS)


def test_a_header_in_another_order_is_refused(spark, tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text(f"{COL_MOVIE},{COL_USER},{COL_RATING},{COL_TIMESTAMP}\n1,2,4.0,100\n")
    with pytest.raises(ConfigError, match=r"ratings.csv: not a valid CSV file \(its header names movieId, userId, rating, "
                                          r"timestamp; expected userId, movieId, rating, timestamp\)"):
        read_ratings(spark, path).collect()


def test_same_second_ratings_do_not_see_each_other(spark, spark_movies):
    ratings = pd.DataFrame({
        COL_USER: [1, 1, 1, 2, 2], COL_MOVIE: [1, 2, 3, 1, 3],
        COL_RATING: [4.0, 5.0, 2.0, 3.0, 4.5], COL_TIMESTAMP: [100, 100, 200, 100, 300],
    })
    s = _spark_samples(spark, ratings, spark_movies).set_index([COL_USER, COL_MOVIE])
    assert s.loc[(1, 1), "userRatingCount"] == 0 and s.loc[(1, 2), "userRatingCount"] == 0
    assert s.loc[(2, 1), "movieRatingCount"] == 0
    later = s.loc[(1, 3)]
    assert later["userRatingCount"] == 2 and later["userAvgRating"] == 4.5
    # Both liked at second 100: the larger movieId counts as the more recent.
    assert [later["userRatedMovie1"], later["userRatedMovie2"]] == [2, 1] and pd.isna(later["userRatedMovie3"])
    assert s.loc[(2, 3), "movieRatingCount"] == 1 and s.loc[(2, 3), "movieAvgRating"] == 2.0
    assert pd.isna(s.loc[(2, 3), "movieRatingStddev"])


def test_no_leakage_when_the_future_changes(spark, ratings_slice, movies, spark_movies):
    """Perturb every rating at or after t (values, and new ratings at t and later): no feature of a sample
    at or before t may change. t is a second in which one user rated several movies."""
    t, perturbed = perturbed_future(ratings_slice, ratings_slice[COL_MOVIE].unique(), 200)

    before = _spark_samples(spark, ratings_slice, spark_movies)
    after = _spark_samples(spark, perturbed, spark_movies)
    upto_t = before[before[COL_TIMESTAMP] <= t]
    assert (upto_t[COL_TIMESTAMP] == t).sum() >= 2
    merged = upto_t.merge(after, on=KEY, suffixes=("", "_after"), validate="one_to_one")
    assert len(merged) == len(upto_t)
    after_values = merged[KEY + [c + "_after" for c in FEATURES]].rename(columns=lambda c: c.removesuffix("_after"))
    _assert_same(merged, after_values, FEATURES)
    # The perturbation did reach later samples, so the check above could have failed.
    later = after[after[COL_TIMESTAMP] > t].merge(before, on=KEY, suffixes=("", "_before"))
    assert not np.allclose(later["userAvgRating"].fillna(0), later["userAvgRating_before"].fillna(0))


@pytest.fixture(scope="module")
def features_run(spark, ratings_slice, sampledata, tmp_path_factory):
    """`run_features` on the slice (written as a ratings.csv) into a fresh folder."""
    tmp = tmp_path_factory.mktemp("features")
    ratings_slice.to_csv(tmp / "ratings.csv", index=False)
    out = tmp / "out"
    return run_features(out, ratings=tmp / "ratings.csv", movies=sampledata / "movies.csv", spark=spark), out


def test_run_features_writes_the_samples(features_run, ratings_slice, movies):
    summary, out = features_run
    parts = {name: _read_split(out / name) for name in SPLITS}
    assert {name: len(p) for name, p in parts.items()} == dict(summary.rows)
    for part in parts.values():  # each part in build_samples' order
        assert part[KEY].equals(_sorted(part)[KEY])
    meta = json.loads((out / META_FILE).read_text())
    assert meta["rows"] == dict(summary.rows) and meta["columns"] == list(SAMPLE_COLUMNS)
    assert (meta["valid_from"], meta["test_from"]) == (summary.valid_from, summary.test_from)
    assert summary.source == "ratings" and summary.wall_s > 0
    # Through CSV and back, the union is still the pandas builder's output.
    _assert_same(_sorted(pd.concat(parts.values(), ignore_index=True)), build_samples(ratings_slice, movies),
                 SAMPLE_COLUMNS)


def test_time_split_is_disjoint_and_test_is_the_latest_fifth(features_run, ratings_slice, movies):
    summary, out = features_run
    train, valid, test = (_read_split(out / name)[COL_TIMESTAMP] for name in SPLITS)
    assert train.max() < valid.min() <= valid.max() < test.min()
    assert (valid.min(), test.min()) == (summary.valid_from, summary.test_from)
    total = len(train) + len(valid) + len(test)
    assert total == len(ratings_slice)
    assert len(test) / total == pytest.approx(0.2, abs=0.02)
    assert len(valid) / (len(train) + len(valid)) == pytest.approx(0.1, abs=0.02)
    reference = time_split(build_samples(ratings_slice, movies))
    assert (reference.valid_from, reference.test_from) == (summary.valid_from, summary.test_from)


def test_host_samples_pass_through_and_resplit(spark, sampledata, tmp_path):
    host_file = sampledata / "testSamples.csv"
    host = read_host_samples(host_file)

    kept = run_features(tmp_path / "kept", host_test=host_file, spark=spark)
    assert dict(kept.rows) == {"train": 0, "valid": 0, "test": len(host)}
    assert kept.valid_from is None and kept.test_from is None
    _assert_same(_read_split(tmp_path / "kept" / "test"), _sorted(host), SAMPLE_COLUMNS)

    resplit = run_features(tmp_path / "resplit", host_test=host_file, resplit=True, fmt="parquet", spark=spark)
    reference = time_split(host)
    assert dict(resplit.rows) == {"train": len(reference.train), "valid": len(reference.valid),
                                  "test": len(reference.test)}
    assert (resplit.valid_from, resplit.test_from) == (reference.valid_from, reference.test_from)
    test = pd.read_parquet(tmp_path / "resplit" / "test")
    assert list(test.columns) == list(SAMPLE_COLUMNS) and test[COL_TIMESTAMP].min() == reference.test_from


@pytest.mark.parametrize("kwargs", [
    {"fmt": "json", "webroot": "/nowhere"},
    {"ratings": "r.csv", "movies": "m.csv", "host_test": "t.csv"},
    {"ratings": "r.csv"},
])
def test_run_features_rejects_bad_arguments(kwargs, tmp_path):
    with pytest.raises(ValueError):
        run_features(tmp_path, **kwargs)
