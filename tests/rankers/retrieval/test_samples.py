"""The retrieval samples: Spark and pandas give the same sequences, the hold-out is the evaluation's."""
import numpy as np
import pandas as pd

from sparrow_llm import schema
from sparrow_llm.datafolder import leave_last_out
from sparrow_llm.rankers.retrieval.samples import (COL_MOVIES, COL_RATINGS, COL_TIMESTAMPS, build_sequences,
                                                   holdout, read_sequences)
from sparrow_llm.rankers.retrieval.samples_spark import build_sequences_spark, run_samples

SLICE_USERS = 40


def _slice(ratings: pd.DataFrame) -> pd.DataFrame:
    users = sorted(ratings[schema.COL_USER].unique())[:SLICE_USERS]
    return ratings[ratings[schema.COL_USER].isin(users)].sample(frac=1.0, random_state=0)  # order must not matter


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a[schema.COL_USER]) == list(b[schema.COL_USER])
    for col in (COL_MOVIES, COL_RATINGS, COL_TIMESTAMPS):
        assert [list(map(float, v)) for v in a[col]] == [list(map(float, v)) for v in b[col]], col


def test_spark_and_pandas_give_the_same_sequences(spark, ratings):
    part = _slice(ratings)
    # Same-second ratings are where an order could differ: the slice must hold some.
    assert part.duplicated([schema.COL_USER, schema.COL_TIMESTAMP]).any()
    pandas_rows = build_sequences(part)
    spark_rows = build_sequences_spark(spark.createDataFrame(part)).orderBy(schema.COL_USER).toPandas()
    _same(spark_rows, pandas_rows)
    assert len(pandas_rows) == SLICE_USERS and pandas_rows[COL_MOVIES].map(len).sum() == len(part)
    first = pandas_rows.iloc[0]
    assert list(first[COL_TIMESTAMPS]) == sorted(first[COL_TIMESTAMPS])


def test_the_spark_job_writes_what_read_sequences_reads(spark, ratings, tmp_path):
    part = _slice(ratings)
    path = tmp_path / "ratings.csv"
    part.to_csv(path, index=False)
    summary = run_samples(tmp_path / "out", path, master="local[2]")
    assert summary.users == SLICE_USERS
    _same(read_sequences(tmp_path / "out"), build_sequences(part))


def test_the_sequence_hold_out_is_the_evaluations_leave_last_out(ratings):
    reduced, holdouts = leave_last_out(ratings)
    kept = {}
    for row in build_sequences(ratings).itertuples(index=False):
        movies, values, times = (np.asarray(v) for v in (row.movies, row.ratings, row.timestamps))
        keep, hidden = holdout(movies, values, times)
        assert hidden == (holdouts[row.userId].movie_id if row.userId in holdouts else None)
        kept[row.userId] = sorted(zip(movies[keep].tolist(), times[keep].tolist()))
    expected = {u: sorted(zip(g[schema.COL_MOVIE], g[schema.COL_TIMESTAMP])) for u, g in reduced.groupby(schema.COL_USER)}
    assert {u: k for u, k in kept.items() if k} == expected
