"""`sparrow-llm features`: the CTR sample job of `clickprompt.samples` in PySpark, for ratings too big for pandas.

It writes the host's trainingSamples.csv columns (`SAMPLE_COLUMNS`, in that order) from ratings.csv and
movies.csv, with the definitions listed in `sparrow_llm.clickprompt.samples`' docstring, so the two
implementations give the same rows and values (tests/test_spark_features.py checks it):

  * "strictly before the sample's timestamp" is a window frame `rangeBetween(unboundedPreceding, -1)` over
    the integer timestamp, per user and per movie: ratings of the same second never see each other;
  * counts, means and sample standard deviations come from exact integer sums (ratings in hundredths,
    years as they are) with the same final float operations as pandas, so values match bit for bit and
    do not depend on the order Spark happens to add rows of one second in (float sums would);
  * userRatedMovie1..5: each liked rating carries its own and its four previous liked movies (in
    (timestamp, movieId) order); a sample takes that list from the newest liked rating before it;
  * userGenre1..5: one running count per genre over the earlier liked movies, sorted by (-count, name).

The output folder gets `train/`, `valid/`, `test/` (CSV with a header, or Parquet, each ordered by
(timestamp, userId, movieId)) and `_meta.json`. The split is `samples.time_split`'s: its cut-off
timestamps are computed by that very function from the samples' timestamps.

The job can also pass the host's own trainingSamples.csv / testSamples.csv through (re-split by time
when asked) instead of building samples.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window, WindowSpec
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, DoubleType, LongType, StringType, StructField, StructType

from ...catalog import YEAR_RE  # Java's regex reads it as Python's does, for ASCII digits and blanks
from ...schema import MOVIES_CSV, RATINGS_CSV
from ...spark import read_csv, read_movies, read_ratings, session
from .samples import time_split
from .schema import (
    COL_GENRES, COL_LABEL, COL_MOVIE, COL_MOVIE_AVG_RATING, COL_MOVIE_RATING_COUNT, COL_MOVIE_RATING_STDDEV,
    COL_RATING, COL_RELEASE_YEAR, COL_TIMESTAMP, COL_TITLE, COL_USER, COL_USER_AVG_RATING,
    COL_USER_AVG_RELEASE_YEAR, COL_USER_RATING_COUNT, COL_USER_RATING_STDDEV, COL_USER_RELEASE_YEAR_STDDEV,
    LIKED_RATING, MOVIE_GENRES, NO_GENRES, SAMPLE_COLUMNS, SAMPLE_DTYPES, USER_GENRES, USER_RATED_MOVIES,
)

__all__ = ["SAMPLE_SCHEMA", "SPLITS", "FORMATS", "META_FILE", "FeatureSummary", "read_samples",
           "build_samples_spark", "run_features"]

_SPARK_TYPES: Mapping[str, DataType] = {
    "int64": LongType(), "Int64": LongType(), "float64": DoubleType(), "object": StringType(),
}
# The host's sample columns with the Spark types of `SAMPLE_DTYPES` (nullable ints are longs with nulls).
SAMPLE_SCHEMA = StructType([StructField(c, _SPARK_TYPES[SAMPLE_DTYPES[c]]) for c in SAMPLE_COLUMNS])
SPLITS = ("train", "valid", "test")
FORMATS = ("csv", "parquet")
META_FILE = "_meta.json"
# build_samples' row order, kept inside each written split.
_SAMPLE_ORDER = (COL_TIMESTAMP, COL_USER, COL_MOVIE)
# Ratings are summed as integers of hundredths, as samples.py does.
_RATING_SCALE = 100


@dataclass(frozen=True)
class FeatureSummary:
    """What `run_features` wrote: rows per split, the cut-offs (None when the host's split is kept)."""

    out: str
    source: str  # "ratings" (built here) or "host" (the host's sample files passed through)
    fmt: str
    rows: Mapping[str, int]
    valid_from: int | None
    test_from: int | None
    inputs: Mapping[str, str]
    wall_s: float

    def to_meta(self) -> dict:
        """The `_meta.json` document (cut-offs also as UTC dates, for people)."""
        meta = {
            "source": self.source, "format": self.fmt, "columns": list(SAMPLE_COLUMNS), "rows": dict(self.rows),
            "valid_from": self.valid_from, "test_from": self.test_from, "inputs": dict(self.inputs),
            "wall_s": round(self.wall_s, 3),
        }
        for key in ("valid_from", "test_from"):
            if meta[key] is not None:
                meta[key + "_utc"] = datetime.fromtimestamp(meta[key], tz=timezone.utc).isoformat()
        return meta


def read_samples(spark: SparkSession, uri: str | os.PathLike | list) -> DataFrame:
    """The host's trainingSamples.csv / testSamples.csv (one or more) in `SAMPLE_SCHEMA`.

    Empty fields, quoted or not, become null (the host writes "" for a missing movie id or genre); the
    host's 0-filled statistics stay 0, as `samples.read_host_samples` keeps them.
    """
    return read_csv(spark, uri, SAMPLE_SCHEMA)


def _catalog(movies_df: DataFrame) -> DataFrame:
    """movieId, releaseYear, genres (array): `samples.movie_catalog` in Spark, first row of a repeated id kept."""
    genres = F.filter(
        F.transform(F.split(F.col(COL_GENRES), r"\|"), lambda g: F.regexp_replace(g, r"^\s+|\s+$", "")),
        lambda g: (g != "") & (g != NO_GENRES))
    year = F.regexp_extract(F.col(COL_TITLE), YEAR_RE.pattern, 1)
    first = Window.partitionBy(COL_MOVIE).orderBy("_row")
    return (movies_df
            .withColumn("_row", F.monotonically_increasing_id())  # file order, taken before any shuffle
            .withColumn("_nth", F.row_number().over(first))
            .where(F.col("_nth") == 1)
            .select(COL_MOVIE,
                    F.when(year != "", year.cast(LongType())).alias(COL_RELEASE_YEAR),
                    genres.alias(COL_GENRES)))


def _before(key: str) -> WindowSpec:
    """The key's ratings strictly before the current row's second (timestamps are integers)."""
    return Window.partitionBy(key).orderBy(COL_TIMESTAMP).rangeBetween(Window.unboundedPreceding, -1)


def _moments(scaled: Column, window: WindowSpec, scale: int) -> tuple[Column, Column, Column]:
    """Count, mean and sample stddev (ddof 1) of the non-null integer `scaled` values (value * `scale`) in
    `window`; null for a mean of nothing or a stddev of fewer than two values.

    The integer sums are exact (Spark's ANSI mode fails on a long overflow rather than wrap), and the float
    steps are samples.py's, in its order: mean = s / (n * scale), var = (n*ss - s*s) / (n * (n-1) * scale^2).
    """
    n = F.count(scaled).over(window)
    s = F.sum(scaled).over(window)
    ss = F.sum(scaled * scaled).over(window)
    nd = n.cast(DoubleType())
    mean = F.when(n > 0, s.cast(DoubleType()) / (n * scale).cast(DoubleType()))
    var = (n * ss - s * s).cast(DoubleType()) / (nd * (nd - 1.0) * float(scale) * float(scale))
    return n, mean, F.when(n > 1, F.sqrt(var))


def build_samples_spark(ratings_df: DataFrame, movies_df: DataFrame) -> DataFrame:
    """One sample per rating in `SAMPLE_SCHEMA`, every feature from strictly earlier ratings: `samples.build_samples`
    in Spark (missing values are nulls where pandas has NaN/NA/None). Not sorted: `run_features` sorts what
    it writes."""
    catalog = _catalog(movies_df)
    # Genre names are few (one running count each below); sorted, so the (-count, name) order breaks ties by name.
    genre_names = sorted(r[0] for r in catalog.select(F.explode(COL_GENRES)).distinct().collect())
    liked = F.col(COL_RATING) >= LIKED_RATING
    # Over one user's liked ratings in (timestamp, movieId) order: this liked movie and the ones before it,
    # newest first, and its place in that order (columns of their own: Spark does not nest windows).
    liked_run = Window.partitionBy(COL_USER, liked).orderBy(COL_TIMESTAMP, COL_MOVIE)
    recent = F.array(F.col(COL_MOVIE), *(F.lag(COL_MOVIE, k).over(liked_run) for k in range(1, len(USER_RATED_MOVIES))))
    rated = (ratings_df
             .select(F.col(COL_USER).cast(LongType()), F.col(COL_MOVIE).cast(LongType()),
                     F.col(COL_RATING).cast(DoubleType()), F.col(COL_TIMESTAMP).cast(LongType()))
             .join(F.broadcast(catalog), COL_MOVIE, "left")
             # bround is half-even, as numpy's np.round.
             .withColumn("_hundredths", F.bround(F.col(COL_RATING) * _RATING_SCALE).cast(LongType()))
             .withColumn("_recent", recent)
             .withColumn("_place", F.row_number().over(liked_run)))

    movie_count, movie_mean, movie_std = _moments(F.col("_hundredths"), _before(COL_MOVIE), _RATING_SCALE)
    by_user = _before(COL_USER)
    user_count, user_mean, user_std = _moments(F.col("_hundredths"), by_user, _RATING_SCALE)
    _, year_mean, year_std = _moments(F.col(COL_RELEASE_YEAR), by_user, 1)
    # The newest earlier liked rating has the highest place; its list holds userRatedMovie1..5. (Ordering by
    # place, not (timestamp, movieId), also picks the last of repeated rows, whose lists differ, as pandas does.)
    newest = F.max(F.when(liked, F.struct("_place", "_recent"))).over(by_user)

    genre_counts = [F.count(F.when(liked & F.array_contains(COL_GENRES, g), True)).over(by_user) for g in genre_names]
    ranked = F.sort_array(F.filter(
        F.array(*(F.struct((-c).alias("neg"), F.lit(g).alias("genre")) for c, g in zip(genre_counts, genre_names))),
        lambda p: p["neg"] < 0))

    parts = {
        COL_MOVIE: F.col(COL_MOVIE), COL_USER: F.col(COL_USER), COL_RATING: F.col(COL_RATING),
        COL_TIMESTAMP: F.col(COL_TIMESTAMP), COL_LABEL: liked, COL_RELEASE_YEAR: F.col(COL_RELEASE_YEAR),
        **{c: F.get(COL_GENRES, i) for i, c in enumerate(MOVIE_GENRES)},
        COL_MOVIE_RATING_COUNT: movie_count, COL_MOVIE_AVG_RATING: movie_mean, COL_MOVIE_RATING_STDDEV: movie_std,
        **{c: F.get(newest["_recent"], i) for i, c in enumerate(USER_RATED_MOVIES)},
        COL_USER_RATING_COUNT: user_count, COL_USER_AVG_RELEASE_YEAR: year_mean,
        COL_USER_RELEASE_YEAR_STDDEV: year_std, COL_USER_AVG_RATING: user_mean, COL_USER_RATING_STDDEV: user_std,
        # F.get is null past the end: a user with fewer liked genres gets nulls in the last slots.
        **{c: F.get(ranked, i)["genre"] for i, c in enumerate(USER_GENRES)},
    }
    # An empty catalog gives no genre columns; F.array() of nothing would be an array<null>.
    if not genre_names:
        parts.update({c: F.lit(None) for c in USER_GENRES})
    return rated.select(*(parts[f.name].cast(f.dataType).alias(f.name) for f in SAMPLE_SCHEMA.fields))


def _cut_offs(samples: DataFrame, test_frac: float, valid_frac: float) -> tuple[int, int]:
    """(valid_from, test_from) of `samples.time_split` on these samples' timestamps.

    Its cut-offs are numpy order statistics ("higher" quantiles of every sample's timestamp), so the
    timestamps go to the driver, once per distinct second with a count, and `time_split` itself picks them.
    """
    counts = samples.groupBy(COL_TIMESTAMP).count().toPandas()
    timestamps = np.repeat(counts[COL_TIMESTAMP].to_numpy(dtype=np.int64), counts["count"].to_numpy())
    split = time_split(pd.DataFrame({COL_TIMESTAMP: timestamps}), test_frac, valid_frac)
    return split.valid_from, split.test_from


def _by_time(samples: DataFrame, valid_from: int, test_from: int) -> dict[str, DataFrame]:
    ts = F.col(COL_TIMESTAMP)
    return {"train": samples.where(ts < valid_from),
            "valid": samples.where((ts >= valid_from) & (ts < test_from)),
            "test": samples.where(ts >= test_from)}


def _write(part: DataFrame, uri: str, fmt: str) -> int:
    """Writes one split in `_SAMPLE_ORDER` and returns its row count, observed during the write (no extra pass)."""
    rows = Observation()
    ordered = part.orderBy(*_SAMPLE_ORDER).observe(rows, F.count(F.lit(1)).alias("rows"))
    writer = ordered.write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", True).csv(uri)
    else:
        writer.parquet(uri)
    return int(rows.get["rows"])


def _write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Writes one small file through Hadoop's FileSystem, so `_meta.json` lands wherever Spark wrote the splits
    (a local folder, HDFS, an object store) without a second storage client."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def run_features(out: str | os.PathLike, *, ratings: str | os.PathLike | None = None,
                 movies: str | os.PathLike | None = None, webroot: str | os.PathLike | None = None,
                 host_train: str | os.PathLike | None = None, host_test: str | os.PathLike | None = None,
                 resplit: bool = False, fmt: str = "csv", test_frac: float = 0.2, valid_frac: float = 0.1,
                 master: str = "local[*]", spark: SparkSession | None = None) -> FeatureSummary:
    """Builds (or passes through) CTR samples and writes `out`/train, valid, test and `_meta.json`.

    Samples are built from `ratings` and `movies` (paths or Spark URIs; each defaults to the host's file
    under `webroot`) and split by time: test = the latest `test_frac` of samples, valid = the latest
    `valid_frac` of the rest (`samples.time_split`). With `host_train` / `host_test` (the host's
    trainingSamples.csv / testSamples.csv) nothing is built: the files are copied into train/ and test/
    (valid/ empty), or, with `resplit`, joined and split by time as above.

    `fmt` is "csv" (header, the host's column order; nulls as empty fields) or "parquet". Uses `spark`, else a
    session from `spark_session(master)`, stopped at the end when this call started it. The summary's
    wall_s is the job's time, without starting Spark.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    host_files = {name: os.fspath(uri) for name, uri in (("train", host_train), ("test", host_test)) if uri is not None}
    if host_files and (ratings is not None or movies is not None):
        raise ValueError("give either ratings/movies or the host's sample files, not both")
    if not host_files and webroot is not None:
        base = os.fspath(webroot).rstrip("/")
        ratings = f"{base}/{RATINGS_CSV}" if ratings is None else ratings
        movies = f"{base}/{MOVIES_CSV}" if movies is None else movies
    if not host_files and (ratings is None or movies is None):
        raise ValueError("ratings and movies (or a webroot holding them) are required")
    inputs = host_files or {"ratings": os.fspath(ratings), "movies": os.fspath(movies)}
    out = os.fspath(out).rstrip("/")

    samples = None
    # `session`: stopped at the end when this call started it; a malformed CSV row is one line naming the file.
    with session(spark, master, "sparrow-llm-features") as spark:
        started = time.perf_counter()
        try:
            if host_files and not resplit:
                # The host's own split, which has no validation part.
                parts = {name: read_samples(spark, host_files[name]) if name in host_files
                         else spark.createDataFrame([], SAMPLE_SCHEMA) for name in SPLITS}
                valid_from = test_from = None
            else:
                samples = (read_samples(spark, list(host_files.values())) if host_files
                           else build_samples_spark(read_ratings(spark, ratings), read_movies(spark, movies)))
                # Persisted: the cut-offs and the three writes all read it, so it is computed once.
                samples = samples.persist()
                valid_from, test_from = _cut_offs(samples, test_frac, valid_frac)
                parts = _by_time(samples, valid_from, test_from)
            rows = {name: _write(parts[name], f"{out}/{name}", fmt) for name in SPLITS}
            summary = FeatureSummary(out=out, source="host" if host_files else "ratings", fmt=fmt, rows=rows,
                                     valid_from=valid_from, test_from=test_from, inputs=inputs,
                                     wall_s=time.perf_counter() - started)
            _write_text(spark, f"{out}/{META_FILE}", json.dumps(summary.to_meta(), indent=2) + "\n")
            return summary
        finally:
            if samples is not None:
                samples.unpersist()
