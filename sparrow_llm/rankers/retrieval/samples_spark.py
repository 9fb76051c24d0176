"""`sparrow-llm retrieval samples`: `samples.build_sequences` in PySpark, for ratings too big for pandas.

The same rows (tests/rankers/retrieval/test_samples.py checks it): each user's ratings are collected as
(timestamp, movieId, rating) structs and sorted, which is `samples.ORDER`, then split into three arrays. The
output is Parquet, one row per user, read back with `samples.read_sequences`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ...schema import COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER
from ...spark import read_ratings, session
from .samples import COL_MOVIES, COL_RATINGS, COL_TIMESTAMPS, ORDER

__all__ = ["build_sequences_spark", "run_samples", "SamplesSummary"]

_ROWS = "_rows"


@dataclass(frozen=True)
class SamplesSummary:
    out: str
    users: int
    wall_s: float

    def line(self) -> str:
        return f"retrieval samples: {self.users} users -> {self.out} in {self.wall_s:.1f} s"


def build_sequences_spark(ratings: DataFrame) -> DataFrame:
    """`samples.build_sequences` over a ratings DataFrame (userId, movieId, rating, timestamp)."""
    users = ratings.groupBy(COL_USER).agg(F.array_sort(F.collect_list(F.struct(*ORDER))).alias(_ROWS))
    return users.select(
        COL_USER,
        F.transform(_ROWS, lambda row: row[COL_MOVIE]).alias(COL_MOVIES),
        F.transform(_ROWS, lambda row: row[COL_RATING]).alias(COL_RATINGS),
        F.transform(_ROWS, lambda row: row[COL_TIMESTAMP]).alias(COL_TIMESTAMPS),
    )


def run_samples(out: str | os.PathLike, ratings: str | os.PathLike, *, master: str = "local[*]") -> SamplesSummary:
    """Read ratings.csv (any Spark URI), build the sequences, write them to `out` as Parquet (replaced)."""
    started = time.perf_counter()
    with session(None, master, "sparrow-llm-retrieval-samples") as spark:
        frame = build_sequences_spark(read_ratings(spark, ratings)).orderBy(COL_USER).cache()
        users = frame.count()
        frame.write.mode("overwrite").parquet(os.fspath(out))
    return SamplesSummary(os.fspath(out), users, time.perf_counter() - started)
