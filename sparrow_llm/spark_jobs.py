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

`sparrow-llm profiles` (`run_profiles`): PALR step 1 for every user, ahead of ranking.

  * Spark reads ratings.csv and movies.csv (any Spark URI) and groups the ratings into one history per
    user, sorted by (timestamp, movieId); the movies become the bridge's `MovieMeta` (titles, years and
    genres parsed by `samples.movie_catalog`, average rating and count over all ratings), built on the
    driver and broadcast.
  * Each partition (`mapPartitions`) opens one backend (`make_backend`), one handle on the configured
    store and a thread pool of the backend's concurrency (`settings.llm.concurrency` for zhipuai; 1 for
    the CPU-bound local backend), so the LLM calls in flight are at most
    min(partitions, task slots) x concurrency: that product, not the partition count, is what to size
    against a provider's limits.
  * Resumable: a user whose stored profile has the same history hash, backend name and version is
    skipped without a call (an unchanged user). Profiles are written as they finish, each finished group
    in one store call (one MULTI/EXEC on Redis, atomic files otherwise), so a killed job loses only the
    users in flight and never leaves half a record; a rerun asks only for the rest.
  * A user whose call fails (`LLMError`) is logged and counted, and keeps its old profile, if any.
  * Each user gives one result row (its profile, what happened, what it cost); the driver sums them
    (observed during the optional Parquet write of the profiles, so the LLM work runs once).

`sparrow-llm rerank --spark` (`run_rerank_spark`): `run.run_rerank` for many users. The driver fetches
candidates and histories through the bridge in bulk batches and attaches stored profiles (the gateway
is the driver's), broadcasts the union of the batches' movies and parallelises the contexts; each
partition builds its ranker once, ranks with `rank_many` in batches and writes the records itself, and
its `RerankSummary` is merged into the driver's. Per user it runs exactly what `run_rerank` runs.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from pyspark import Broadcast
from pyspark.serializers import CloudPickleSerializer
from pyspark.sql import Column, DataFrame, Observation, Row, SparkSession, Window, WindowSpec
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, DoubleType, LongType, StringType, StructField, StructType
from tqdm import tqdm

from .bridge import BridgeClient, MovieMeta, UserHistory, UserRating
from .clickprompt.samples import movie_catalog, time_split
from .clickprompt.schema import (
    COL_GENRES, COL_LABEL, COL_MOVIE, COL_MOVIE_AVG_RATING, COL_MOVIE_RATING_COUNT, COL_MOVIE_RATING_STDDEV,
    COL_RATING, COL_RELEASE_YEAR, COL_TIMESTAMP, COL_TITLE, COL_USER, COL_USER_AVG_RATING,
    COL_USER_AVG_RELEASE_YEAR, COL_USER_RATING_COUNT, COL_USER_RATING_STDDEV, COL_USER_RELEASE_YEAR_STDDEV,
    LIKED_RATING, MOVIE_GENRES, NO_GENRES, SAMPLE_COLUMNS, SAMPLE_DTYPES, USER_GENRES, USER_RATED_MOVIES,
)
from .config import Settings
from .llm import Backend, LLMError, make_backend
from .palr import PalrRanker, history_hash, write_profile
from .prompts import Prompts
from .rankers import UserContext, make_ranker
from .run import RerankSummary, bridge_client, fetch_contexts, open_default_store, rank_contexts, user_batches
from .schema import MOVIES_CSV, RATINGS_CSV
from .store import Profile, Store

__all__ = [
    "SAMPLE_SCHEMA", "SPLITS", "FORMATS", "META_FILE", "FeatureSummary", "spark_session", "read_ratings", "read_movies",
    "read_samples", "build_samples_spark", "run_features",
    "PROFILE_COLUMNS", "ProfileSummary", "movie_metas", "user_histories", "run_profiles", "run_rerank_spark",
]

log = logging.getLogger(__name__)

_SPARK_TYPES: Mapping[str, DataType] = {
    "int64": LongType(), "Int64": LongType(), "float64": DoubleType(), "object": StringType(),
}
# The host's sample columns with the Spark types of `SAMPLE_DTYPES` (nullable ints are longs with nulls).
SAMPLE_SCHEMA = StructType([StructField(c, _SPARK_TYPES[SAMPLE_DTYPES[c]]) for c in SAMPLE_COLUMNS])
_RATINGS_SCHEMA = StructType([
    StructField(COL_USER, LongType()), StructField(COL_MOVIE, LongType()),
    StructField(COL_RATING, DoubleType()), StructField(COL_TIMESTAMP, LongType()),
])
_MOVIES_SCHEMA = StructType([
    StructField(COL_MOVIE, LongType()), StructField(COL_TITLE, StringType()), StructField(COL_GENRES, StringType()),
])

SPLITS = ("train", "valid", "test")
FORMATS = ("csv", "parquet")
META_FILE = "_meta.json"
# build_samples' row order, kept inside each written split.
_SAMPLE_ORDER = (COL_TIMESTAMP, COL_USER, COL_MOVIE)
# samples.py's release-year pattern (a title's trailing "(YYYY)"); Java reads it as Python does (for ASCII
# digits and blanks: Python's \d and \s also match other Unicode digits and spaces).
_YEAR_PATTERN = r"\s*\((\d{4})\)\s*$"
# Ratings are summed as integers of hundredths, as samples.py does.
_RATING_SCALE = 100
_LOCAL_MASTER = re.compile(r"^local(?:\[(\d+|\*)(?:,\d+)?\])?$")


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


def spark_session(master: str = "local[*]", app: str = "sparrow-llm-features", driver_memory: str = "4g"
                  ) -> SparkSession:
    """A SparkSession for the jobs here (or the running one, with these SQL settings applied).

    UTC session time zone (timestamps are unix seconds; nothing should depend on the machine's zone), no UI
    or progress bars, ERROR-level logs, and for a local master a few shuffle partitions per core: Spark's
    default 200 turns a 100k-row shuffle into 200 tiny tasks. `driver_memory` only takes effect when this
    call starts the JVM; 4g leaves most of a 24 GiB machine to the rest.
    """
    builder = (SparkSession.builder.master(master).appName(app)
               .config("spark.driver.memory", driver_memory)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               # pyarrow is a dependency: pandas <-> Spark through Arrow (toPandas of the split counts, tests).
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    cores = _local_cores(master)
    if cores is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * cores))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _local_cores(master: str) -> int | None:
    """Worker threads of a local master ("local", "local[4]", "local[*]", "local[2,3]"); None for a cluster."""
    match = _LOCAL_MASTER.match(master)
    if match is None:
        return None
    threads = match.group(1)
    if threads is None:
        return 1
    return (os.cpu_count() or 1) if threads == "*" else int(threads)


def _read_csv(spark: SparkSession, uri: str | os.PathLike | list, schema: StructType) -> DataFrame:
    """CSV with a header that must name `schema`'s columns in order (enforceSchema=False makes Spark check it,
    so a file with swapped columns fails instead of loading silently), RFC 4180 quoting ("" inside quotes is
    a quote, unlike Spark's default backslash escape), and no silent nulls for malformed rows."""
    uris = [os.fspath(u) for u in uri] if isinstance(uri, list) else os.fspath(uri)
    return (spark.read.schema(schema)
            .options(header=True, enforceSchema=False, quote='"', escape='"', mode="FAILFAST")
            .csv(uris))


def read_ratings(spark: SparkSession, uri: str | os.PathLike) -> DataFrame:
    """ratings.csv (userId, movieId, rating, timestamp) as longs and a double."""
    return _read_csv(spark, uri, _RATINGS_SCHEMA)


def read_movies(spark: SparkSession, uri: str | os.PathLike) -> DataFrame:
    """movies.csv (movieId, title, genres), quoted titles with commas included (the host drops those)."""
    return _read_csv(spark, uri, _MOVIES_SCHEMA)


def read_samples(spark: SparkSession, uri: str | os.PathLike | list) -> DataFrame:
    """The host's trainingSamples.csv / testSamples.csv (one or more) in `SAMPLE_SCHEMA`.

    Empty fields, quoted or not, become null (the host writes "" for a missing movie id or genre); the
    host's 0-filled statistics stay 0, as `samples.read_host_samples` keeps them.
    """
    return _read_csv(spark, uri, SAMPLE_SCHEMA)


def _catalog(movies_df: DataFrame) -> DataFrame:
    """movieId, releaseYear, genres (array): `samples.movie_catalog` in Spark, first row of a repeated id kept."""
    genres = F.filter(
        F.transform(F.split(F.col(COL_GENRES), r"\|"), lambda g: F.regexp_replace(g, r"^\s+|\s+$", "")),
        lambda g: (g != "") & (g != NO_GENRES))
    year = F.regexp_extract(F.col(COL_TITLE), _YEAR_PATTERN, 1)
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

    owned = spark is None and SparkSession.getActiveSession() is None
    spark = spark or spark_session(master)
    started = time.perf_counter()
    samples = None
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
        if owned:
            spark.stop()


# ---- shared by the LLM jobs -------------------------------------------------------------------------------------

@contextmanager
def _session(spark: SparkSession | None, master: str, app: str) -> Iterator[SparkSession]:
    """`spark`, else a session from `spark_session(master)`, stopped on exit only when this call started it.

    These jobs run Python in the executors: unless PYSPARK_PYTHON says otherwise, the workers run this
    interpreter (the one with sparrow_llm installed), not whatever `python3` is first on the PATH.
    """
    owned = spark is None and SparkSession.getActiveSession() is None
    if owned:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = spark or spark_session(master, app=app)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()


_JOB_GROUP = "spark.jobGroup.id"
_JOB_DESCRIPTION = "spark.job.description"


@contextmanager
def _task_progress(spark: SparkSession, desc: str, enabled: bool) -> Iterator[None]:
    """A console bar of the finished tasks of the Spark jobs this thread starts inside the block (the LLM
    stage has one task per partition), polled from Spark's status tracker: `spark_session` turns Spark's
    own bar off, and that setting cannot change once the context runs. Stages that never start (skipped:
    their shuffle output is reused) are left out of the total."""
    if not enabled:
        yield
        return
    sc = spark.sparkContext
    previous = {key: sc.getLocalProperty(key) for key in (_JOB_GROUP, _JOB_DESCRIPTION)}
    group = f"sparrow-llm-{uuid.uuid4().hex}"
    sc.setJobGroup(group, desc)
    tracker = sc.statusTracker()
    stop = threading.Event()

    def poll() -> None:
        with tqdm(desc=desc, unit="task", total=0) as bar:
            while True:
                last = stop.is_set()  # one more look after the block ends, so the bar ends full
                done = total = 0
                for job in filter(None, map(tracker.getJobInfo, tracker.getJobIdsForGroup(group))):
                    for stage in filter(None, map(tracker.getStageInfo, job.stageIds)):
                        if stage.numActiveTasks or stage.numCompletedTasks or stage.numFailedTasks:
                            done += stage.numCompletedTasks
                            total += stage.numTasks
                bar.total, bar.n = total, done
                bar.refresh()
                if last:
                    return
                stop.wait(0.5)

    thread = threading.Thread(target=poll, name="spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for key, value in previous.items():
            sc.setLocalProperty(key, value)  # None removes it again


# ---- `sparrow-llm profiles` -------------------------------------------------------------------------------------

# The Parquet columns of `run_profiles`: a Profile's JSON fields in the store (`Profile.to_json`), meta aside.
_PROFILE_FIELDS = (
    StructField(COL_USER, LongType(), False), StructField("text", StringType()), StructField("backend", StringType()),
    StructField("version", StringType()), StructField("historyHash", StringType()), StructField("createdAt", LongType()),
)
PROFILE_COLUMNS = tuple(f.name for f in _PROFILE_FIELDS)
_HISTORY = "_history"
_STATUS, _LLM_CALLS, _PROMPT_TOKENS, _COMPLETION_TOKENS = "_status", "_llmCalls", "_promptTokens", "_completionTokens"
_WRITTEN, _UNCHANGED, _FAILED = "written", "unchanged", "failed"
# One result row per user: the profile (as stored now; nulls but the id when its call failed), then what happened.
_RESULT_SCHEMA = StructType([
    *_PROFILE_FIELDS, StructField(_STATUS, StringType(), False),
    *(StructField(c, LongType(), False) for c in (_LLM_CALLS, _PROMPT_TOKENS, _COMPLETION_TOKENS)),
])


@dataclass(frozen=True)
class ProfileSummary:
    """What `run_profiles` did. `skipped` users were unchanged (their profile stands, no call was made)."""

    backend: str
    version: str
    users: int
    written: int
    skipped: int
    failed: int
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    partitions: int
    concurrency: int  # per partition
    wall_s: float  # the job, without starting Spark
    parquet: str | None = None

    def line(self) -> str:
        rate = self.users / self.wall_s if self.wall_s else 0.0
        return (f"profiles ({self.backend}, {self.version}): {self.users} users, {self.written} written, "
                f"{self.skipped} skipped (unchanged), {self.llm_calls} LLM calls, tokens {self.prompt_tokens} in / "
                f"{self.completion_tokens} out, {self.failed} failed in {self.wall_s:.1f} s ({rate:.1f} users/s; "
                f"{self.partitions} partitions x {self.concurrency} calls in flight)")


def movie_metas(movies_df: DataFrame, ratings_df: DataFrame) -> dict[int, MovieMeta]:
    """The bridge's `MovieMeta` of every movie of movies.csv, on the driver: title, year and genres as
    `samples.movie_catalog` parses them, average rating and count over all of `ratings_df` (0 when unrated)."""
    catalog = movie_catalog(movies_df.toPandas())
    counted = ratings_df.groupBy(COL_MOVIE).agg(F.avg(COL_RATING).alias("avg"), F.count(F.lit(1)).alias("n"))
    stats = {int(r[COL_MOVIE]): (float(r["avg"]), int(r["n"])) for r in counted.collect()}
    return {int(movie_id): MovieMeta(int(movie_id), title, 0 if pd.isna(year) else int(year), genres,
                                     *stats.get(int(movie_id), (0.0, 0)))
            for movie_id, title, year, genres in catalog[[COL_TITLE, COL_RELEASE_YEAR, COL_GENRES]].itertuples()}


def user_histories(ratings_df: DataFrame) -> DataFrame:
    """userId and `_history`: the user's ratings as (timestamp, movieId, rating) structs in that order, which is
    (timestamp, movieId) order with the rating breaking the tie of a repeated row, so it never depends on
    the order Spark collects rows in (the history hash would)."""
    return ratings_df.groupBy(COL_USER).agg(
        F.sort_array(F.collect_list(F.struct(COL_TIMESTAMP, COL_MOVIE, COL_RATING))).alias(_HISTORY))


def _user_history(row: Row) -> UserHistory:
    return UserHistory(int(row[COL_USER]), True, tuple(UserRating(int(r[COL_MOVIE]), float(r[COL_RATING]),
                                                                  int(r[COL_TIMESTAMP])) for r in row[_HISTORY]))


def _profile_version(llm: Backend, prompts: Prompts) -> str:
    # The version PalrRanker records (and write_profile stamps): built by palr, not spelled again here.
    return PalrRanker(llm, prompts).version


def _result(profile: Profile, status: str, llm_calls: int = 0) -> tuple:
    """A user's result row; tokens are this run's (from the profile's meta) only when it made the call."""
    meta = profile.meta if llm_calls else {}
    tokens = (int(meta.get("prompt_tokens", 0)), int(meta.get("completion_tokens", 0)))
    return (profile.user_id, profile.text, profile.backend, profile.version, profile.history_hash,
            profile.created_at_ms, status, llm_calls, *tokens)


class _Outcome(NamedTuple):
    profile: Profile | None  # None: the call failed
    row: tuple


def _profile_user(llm: Backend, history: UserHistory, movies: Mapping[int, MovieMeta], prompts: Prompts) -> _Outcome:
    try:
        profile = write_profile(llm, history, movies, prompts)
    except LLMError as exc:  # one user's failure; its old profile, if any, stays
        log.warning("profile of user %s failed: %s", history.user_id, exc)
        return _Outcome(None, (history.user_id, None, None, None, None, None, _FAILED, 1, 0, 0))
    return _Outcome(profile, _result(profile, _WRITTEN, llm_calls=1))


def _store_finished(store: Store, finished: Iterable[Future]) -> list[tuple]:
    """Writes the finished users' profiles in one store call and returns their result rows."""
    outcomes = [f.result() for f in finished]
    store.put_profiles(o.profile for o in outcomes if o.profile is not None)
    return [o.row for o in outcomes]


def _profile_partition(settings: Settings, movies_bc: Broadcast, rows: Iterable[Row]) -> Iterator[tuple]:
    """One partition of the profile job, in an executor: one result row per user (see `_RESULT_SCHEMA`)."""
    llm = make_backend(settings.llm)
    prompts = Prompts.from_settings(settings.llm)
    version = _profile_version(llm, prompts)
    store = open_default_store(settings)
    movies = movies_bc.value
    try:
        with ThreadPoolExecutor(max_workers=llm.concurrency, thread_name_prefix="profiles") as pool:
            pending: set[Future] = set()
            for row in rows:
                history = _user_history(row)
                stored = store.get_profile(history.user_id)
                unchanged = stored is not None and (stored.history_hash, stored.backend, stored.version) == (
                    history_hash(history.ratings), llm.name, version)
                # Finished users are stored at once; a user who needs a call first waits for a free slot.
                finished = {f for f in pending if f.done()}
                if not unchanged and not finished and len(pending) >= llm.concurrency:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                pending -= finished
                yield from _store_finished(store, finished)
                if unchanged:
                    yield _result(stored, _UNCHANGED)
                else:
                    pending.add(pool.submit(_profile_user, llm, history, movies, prompts))
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from _store_finished(store, finished)
    finally:
        llm.close()
        store.close()


def _profile_totals(results: DataFrame, parquet_out: str | None) -> dict[str, int]:
    """Sums of the result rows in one pass over them (the pass that makes the LLM calls): an aggregate, or
    metrics observed while the profiles (failed users left out) are written to Parquet."""
    status = F.col(_STATUS)
    sums = [F.count(F.lit(1)).alias("users"),
            *(F.sum((status == s).cast(LongType())).alias(s) for s in (_WRITTEN, _UNCHANGED, _FAILED)),
            *(F.sum(c).alias(c) for c in (_LLM_CALLS, _PROMPT_TOKENS, _COMPLETION_TOKENS))]
    if parquet_out is None:
        totals = results.agg(*sums).first().asDict()
    else:
        observed = Observation("profiles")
        (results.observe(observed, *sums).where(status != _FAILED).select(*PROFILE_COLUMNS)
         .write.mode("overwrite").parquet(parquet_out))
        totals = observed.get
    return {name: int(value or 0) for name, value in totals.items()}  # a sum over no rows is null


def run_profiles(settings: Settings, *, ratings: str | os.PathLike | None = None,
                 movies: str | os.PathLike | None = None, master: str = "local[*]", partitions: int | None = None,
                 users: Sequence[int] | None = None, parquet_out: str | os.PathLike | None = None,
                 spark: SparkSession | None = None, progress: bool = True) -> ProfileSummary:
    """Writes a PALR profile for every user of `ratings` (or only those of `users` who have ratings) whose
    history changed since its stored profile, into the configured store (file store: `open_default_store`'s
    folder, which every executor must reach; Redis for a cluster).

    `ratings` / `movies` default to the data web root's sampledata CSVs (`settings.host.data_webroot`).
    `partitions` (default: Spark's default parallelism) times the backend's concurrency bounds the calls in
    flight (while partitions <= task slots). `parquet_out` also gets every profile (unchanged ones too) in
    `PROFILE_COLUMNS`. Uses `spark`, else a session from `spark_session(master)`, stopped at the end when this
    call started it; the summary's wall_s leaves Spark's start-up out.
    """
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    webroot = settings.host.data_webroot
    ratings = os.fspath(webroot / RATINGS_CSV if ratings is None else ratings)
    movies = os.fspath(webroot / MOVIES_CSV if movies is None else movies)
    # Built here once, so a bad backend, key or template fails before Spark starts (and gives the summary its names).
    llm = make_backend(settings.llm)
    try:
        backend, concurrency = llm.name, llm.concurrency
        version = _profile_version(llm, Prompts.from_settings(settings.llm))
    finally:
        llm.close()
    with _session(spark, master, "sparrow-llm-profiles") as spark:
        started = time.perf_counter()
        sc = spark.sparkContext
        partitions = partitions or sc.defaultParallelism
        with _task_progress(spark, f"profiles ({partitions} partitions)", progress):
            ratings_df = read_ratings(spark, ratings)
            movies_bc = sc.broadcast(movie_metas(read_movies(spark, movies), ratings_df))
            try:
                if users:
                    ratings_df = ratings_df.where(F.col(COL_USER).isin([int(u) for u in users]))
                # Round-robin: partitions of equal user counts finish together, keeping the calls in flight up.
                histories = user_histories(ratings_df).repartition(partitions)
                results = spark.createDataFrame(
                    histories.rdd.mapPartitions(partial(_profile_partition, settings, movies_bc)), _RESULT_SCHEMA)
                totals = _profile_totals(results, None if parquet_out is None else os.fspath(parquet_out))
            finally:
                movies_bc.destroy()
        return ProfileSummary(
            backend=backend, version=version, users=totals["users"], written=totals[_WRITTEN],
            skipped=totals[_UNCHANGED], failed=totals[_FAILED], llm_calls=totals[_LLM_CALLS],
            prompt_tokens=totals[_PROMPT_TOKENS], completion_tokens=totals[_COMPLETION_TOKENS],
            partitions=partitions, concurrency=concurrency, wall_s=time.perf_counter() - started,
            parquet=None if parquet_out is None else os.fspath(parquet_out))


# ---- `sparrow-llm rerank --spark` -------------------------------------------------------------------------------

def _rerank_partition(settings: Settings, model: str, store: Store | None, movies_bc: Broadcast,
                      contexts: Iterable[UserContext]) -> Iterator[RerankSummary]:
    """One partition of the rerank job, in an executor: its ranker once, then `run_rerank`'s batches."""
    store = store or open_default_store(settings)
    ranker = make_ranker(model, settings, store)
    movies = movies_bc.value
    summary = RerankSummary(model=ranker.name)
    batch = max(1, settings.bridge.batch_users)
    try:
        contexts = iter(contexts)
        while chunk := [dataclasses.replace(c, movies=movies) for c in itertools.islice(contexts, batch)]:
            rank_contexts(ranker, chunk, store, summary)
    finally:
        store.close()
    yield summary


def run_rerank_spark(settings: Settings, model: str, *, users: Sequence[int] | None = None,
                     sample: int | None = None, master: str = "local[*]", partitions: int | None = None,
                     client: BridgeClient | None = None, store: Store | None = None,
                     spark: SparkSession | None = None, progress: bool = True) -> RerankSummary:
    """`run.run_rerank` with the ranking in Spark executors: same users, same records, same summary counters.

    `store` (default: the configured one) gives the driver the stored profiles and, sent to the executors,
    takes the records and the LLM cache; it must pickle (a FileStore does). With None each partition opens
    the configured store itself (the way to use Redis). `partitions` defaults to Spark's default parallelism.
    """
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    shipped = store
    store = store or open_default_store(settings)
    if shipped is not None:
        try:
            CloudPickleSerializer().dumps(shipped)  # how Spark will send it, with the closure
        except Exception as exc:
            raise ValueError(f"{shipped!r} cannot be sent to Spark executors ({type(exc).__name__}: {exc}); "
                             "pass store=None to have each partition open the configured store") from None
    # The driver's ranker only says what to fetch (candidate source, embeddings) and names the summary.
    ranker = make_ranker(model, settings, store)
    summary = RerankSummary(model=ranker.name)
    started = time.perf_counter()
    try:
        with bridge_client(settings, client) as client:
            batches = user_batches(client, settings, users, sample)
            # A context travels without its movies; the executors attach the union of every batch's movies,
            # which holds the same entry for each movie a user names (a user's batch fetched all of those).
            contexts: list[UserContext] = []
            movies: dict[int, MovieMeta] = {}
            with tqdm(total=sum(map(len, batches)), desc=f"fetch {ranker.name}", unit="user",
                      disable=not progress) as bar:
                for user_batch in batches:
                    found, unknown = fetch_contexts(client, ranker, store, user_batch)
                    if found:
                        movies.update(found[0].movies)  # one dict per bulk call
                    contexts += [dataclasses.replace(c, movies={}) for c in found]
                    summary.users += len(user_batch)
                    summary.skipped += unknown
                    bar.update(len(user_batch))
        if contexts:
            with _session(spark, master, "sparrow-llm-rerank") as spark:
                sc = spark.sparkContext
                slices = min(partitions or sc.defaultParallelism, len(contexts))
                movies_bc = sc.broadcast(movies)
                try:
                    with _task_progress(spark, f"rerank {ranker.name} ({slices} partitions)", progress):
                        tallies = (sc.parallelize(contexts, slices)
                                   .mapPartitions(partial(_rerank_partition, settings, model, shipped, movies_bc))
                                   .collect())
                finally:
                    movies_bc.destroy()
            for tally in tallies:
                summary.merge(tally)
    finally:
        summary.wall_s = time.perf_counter() - started
    return summary
