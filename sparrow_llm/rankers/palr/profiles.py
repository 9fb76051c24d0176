"""`sparrow-llm profiles` (`run_profiles`): PALR step 1 for every user, ahead of ranking.

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
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import pandas as pd
from pyspark import Broadcast
from pyspark.sql import DataFrame, Observation, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from ...catalog import movie_catalog
from ...config import ConfigError, Settings
from ...domain import MovieMeta, Profile, UserHistory, UserRating
from ...schema import (
    COL_GENRES, COL_MOVIE, COL_RATING, COL_RELEASE_YEAR, COL_TIMESTAMP, COL_TITLE, COL_USER, MOVIES_CSV, RATINGS_CSV,
)
from ...spark import read_movies, read_ratings, session, task_progress
from ...store import Store, open_default_store
from ..llm.base import Backend, LLMError, make_backend
from .prompts import Prompts
from .ranker import history_hash, profile_version, write_profile

__all__ = ["PROFILE_COLUMNS", "ProfileSummary", "movie_metas", "user_histories", "run_profiles"]

log = logging.getLogger(__name__)


# The Parquet columns of `run_profiles`: a Profile's JSON fields in the store (`Profile.to_json`), meta aside.
_PROFILE_FIELDS = (
    StructField(COL_USER, LongType(), False), StructField("text", StringType()), StructField("backend", StringType()),
    StructField("version", StringType()), StructField("historyHash", StringType()), StructField("createdAt", LongType()),
)
PROFILE_COLUMNS = tuple(f.name for f in _PROFILE_FIELDS)
_HISTORY = "_history"
_STATUS, _LLM_CALLS, _PROMPT_TOKENS, _COMPLETION_TOKENS = "_status", "_llmCalls", "_promptTokens", "_completionTokens"
_BY_MODEL = "_byModel"  # 1 when the profile written now is the model's own (true of the history), 0 otherwise
_WRITTEN, _UNCHANGED, _FAILED = "written", "unchanged", "failed"
# One result row per user: the profile (as stored now; nulls but the id when its call failed), then what happened.
_RESULT_SCHEMA = StructType([
    *_PROFILE_FIELDS, StructField(_STATUS, StringType(), False),
    *(StructField(c, LongType(), False) for c in (_LLM_CALLS, _PROMPT_TOKENS, _COMPLETION_TOKENS, _BY_MODEL)),
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
    by_model: int  # of the written: the model's own profile (the others: the data profile, the model's was not true)
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    partitions: int
    concurrency: int  # per partition
    wall_s: float  # the job, without starting Spark
    parquet: str | None = None

    def line(self) -> str:
        rate = self.users / self.wall_s if self.wall_s else 0.0
        origin = (f" ({self.by_model} by the model, {self.written - self.by_model} from the data where the model's "
                  "was not true)") if self.written else ""
        return (f"profiles ({self.backend}, {self.version}): {self.users} users, {self.written} written{origin}, "
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


def _result(profile: Profile, status: str, llm_calls: int = 0) -> tuple:
    """A user's result row; tokens are this run's (from the profile's meta) only when it made the call."""
    meta = profile.meta if llm_calls else {}
    tokens = (int(meta.get("prompt_tokens", 0)), int(meta.get("completion_tokens", 0)))
    return (profile.user_id, profile.text, profile.backend, profile.version, profile.history_hash,
            profile.created_at_ms, status, llm_calls, *tokens, int(meta.get("written_by") == "model"))


class _Outcome(NamedTuple):
    profile: Profile | None  # None: the call failed
    row: tuple


def _profile_user(llm: Backend, history: UserHistory, movies: Mapping[int, MovieMeta], prompts: Prompts) -> _Outcome:
    try:
        profile = write_profile(llm, history, movies, prompts)
    except LLMError as exc:  # one user's failure; its old profile, if any, stays
        log.warning("profile of user %s failed: %s", history.user_id, exc)
        return _Outcome(None, (history.user_id, None, None, None, None, None, _FAILED, 1, 0, 0, 0))
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
    version = profile_version(prompts)
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
            *(F.sum(c).alias(c) for c in (_LLM_CALLS, _PROMPT_TOKENS, _COMPLETION_TOKENS, _BY_MODEL))]
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
    for name, uri in (("ratings", ratings), ("movies", movies)):
        if "://" not in uri and not os.path.isfile(uri):  # a local path: say so now, not in a Spark trace
            raise ConfigError(f"no {name} file at {uri} (--{name}, or a data folder with {RATINGS_CSV})")
    # Built here once, so a bad backend, key or template fails before Spark starts (and gives the summary its names).
    llm = make_backend(settings.llm)
    try:
        backend, concurrency = llm.name, llm.concurrency
        version = profile_version(Prompts.from_settings(settings.llm))
    finally:
        llm.close()
    with session(spark, master, "sparrow-llm-profiles") as spark:
        started = time.perf_counter()
        sc = spark.sparkContext
        partitions = partitions or sc.defaultParallelism
        with task_progress(spark, f"profiles ({partitions} partitions)", progress):
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
            skipped=totals[_UNCHANGED], failed=totals[_FAILED], by_model=totals[_BY_MODEL], llm_calls=totals[_LLM_CALLS],
            prompt_tokens=totals[_PROMPT_TOKENS], completion_tokens=totals[_COMPLETION_TOKENS],
            partitions=partitions, concurrency=concurrency, wall_s=time.perf_counter() - started,
            parquet=None if parquet_out is None else os.fspath(parquet_out))
