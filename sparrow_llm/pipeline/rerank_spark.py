"""`sparrow-llm rerank --spark` (`run_rerank_spark`): `rerank.run_rerank` for many users. The driver fetches
candidates and histories through the bridge in bulk batches and attaches stored profiles (the gateway
is the driver's), broadcasts the union of the batches' movies (source `catalogue`: the loaded catalogue, which
is then every context's candidates too) and parallelises the contexts; each partition builds its composed ranker
(`registry.make_ranker`: the heavy parts, a retrieval model's arrays and the local LLM's weights, are loaded once
per Python worker and shared), ranks with `rank_many` in batches, writes the records itself and closes the ranker
(no backend thread or client outlives the partition); its `RerankSummary` is merged into the driver's. Per user
it runs exactly what `run_rerank` runs.

Users go in waves of `WAVE_USERS`, one Spark job each, the next wave fetched while the executors rank this
one: the driver holds two waves' contexts at most (~50 KiB a user), whatever the deploy's size; all users
at once took 540 MiB at 10k users and would take ~5 GiB at 100k. Waves of 2048 still grew the driver's peak
1.9x from 1k to 10k users; a wave's Spark job costs well under a second, so waves stay small.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from typing import Iterable, Iterator, Sequence

from pyspark import Broadcast
from pyspark.serializers import CloudPickleSerializer
from pyspark.sql import SparkSession

from ..bridge.client import BridgeClient
from ..candidates import bridge_client, fetch_contexts, loaded_catalogue, user_batches
from ..config import Settings
from ..domain import MovieMeta, UserContext
from ..progress import progress_bar
from ..registry import make_ranker
from ..schema import SOURCE_CATALOGUE
from ..spark import session
from ..store import Store, open_default_store
from .rerank import RerankSummary, profile_users, rank_contexts

__all__ = ["run_rerank_spark", "WAVE_USERS"]

WAVE_USERS = 512


def _rerank_partition(settings: Settings, model: str, store: Store | None, movies_bc: Broadcast,
                      contexts: Iterable[UserContext]) -> Iterator[RerankSummary]:
    """One partition of the rerank job, in an executor: its ranker once, then `run_rerank`'s batches."""
    store = store or open_default_store(settings)
    movies = movies_bc.value
    summary = RerankSummary(model=model)
    batch = max(1, settings.bridge.batch_users)
    try:
        ranker = make_ranker(model, settings, store)
        try:
            catalogue = tuple(movies) if ranker.candidate_source == SOURCE_CATALOGUE else None
            contexts = iter(contexts)
            while chunk := [dataclasses.replace(c, movies=movies, candidate_ids=catalogue or c.candidate_ids)
                            for c in itertools.islice(contexts, batch)]:
                rank_contexts(ranker, chunk, store, summary, keep_fresh_s=settings.store.max_age_s)
        finally:
            ranker.close()
    finally:
        store.close()
    yield summary


def run_rerank_spark(settings: Settings, model: str, *, users: Sequence[int] | None = None,
                     sample: int | None = None, master: str = "local[*]", partitions: int | None = None,
                     client: BridgeClient | None = None, store: Store | None = None,
                     spark: SparkSession | None = None, progress: bool = True,
                     profiles: bool = False) -> RerankSummary:
    """`rerank.run_rerank` with the ranking in Spark executors: same users, same records, same summary counters,
    the same profile step first with `profiles` (on this machine, `local[1]`).

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
    ranker.close()
    summary = RerankSummary(model=ranker.name)
    started = time.perf_counter()
    try:
        with bridge_client(settings, client) as client, ExitStack() as stack:
            batches = user_batches(client, settings, users, sample)
            if profiles:
                started += profile_users(settings, model, [u for b in batches for u in b], summary, progress)
            per_wave = max(1, WAVE_USERS // max(1, settings.bridge.batch_users))
            waves = [batches[i:i + per_wave] for i in range(0, len(batches), per_wave)]
            catalogue = (loaded_catalogue(client, settings, ranker.needs_emb)
                         if ranker.candidate_source == SOURCE_CATALOGUE else None)
            fetch = partial(_fetch_wave, client, store, ranker.candidate_source, ranker.needs_emb, catalogue)
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerank-fetch"))
            bar = stack.enter_context(progress_bar(total=sum(map(len, batches)), desc=f"rerank {ranker.name}",
                                                   unit="user", enabled=progress))
            pending = pool.submit(fetch, waves[0]) if waves else None
            active: SparkSession | None = None  # started for the first wave that has users to rank
            for i in range(len(waves)):
                contexts, movies, unknown = pending.result()
                pending = pool.submit(fetch, waves[i + 1]) if i + 1 < len(waves) else None
                if contexts:
                    active = active or stack.enter_context(session(spark, master, "sparrow-llm-rerank"))
                    for tally in _rank_wave(active, settings, model, shipped, contexts, movies, partitions):
                        summary.merge(tally)
                wave_users = sum(map(len, waves[i]))
                summary.users += wave_users
                summary.skipped += unknown
                bar.update(wave_users)
    finally:
        summary.wall_s = time.perf_counter() - started
    return summary


def _fetch_wave(client: BridgeClient, store: Store, source: str, with_emb: bool,
                catalogue: dict[int, MovieMeta] | None,
                batches: Sequence[Sequence[int]]) -> tuple[list[UserContext], dict[int, MovieMeta], int]:
    """The wave's contexts (without their movies, and without their candidates when those are the catalogue),
    the union of their movies, and how many users were unknown. The executors attach the union, which holds the
    same entry for each movie a user names (a user's batch fetched all of those)."""
    contexts: list[UserContext] = []
    movies: dict[int, MovieMeta] = dict(catalogue or {})
    unknown = 0
    for user_batch in batches:
        found, missing = fetch_contexts(client, store, user_batch, source=source, with_emb=with_emb,
                                        catalogue=catalogue)
        if found and catalogue is None:
            movies.update(found[0].movies)  # one dict per bulk call
        contexts += [dataclasses.replace(c, movies={}, candidate_ids=() if catalogue else c.candidate_ids)
                     for c in found]
        unknown += missing
    return contexts, movies, unknown


def _rank_wave(spark: SparkSession, settings: Settings, model: str, shipped: Store | None,
               contexts: list[UserContext], movies: dict[int, MovieMeta],
               partitions: int | None) -> list[RerankSummary]:
    """One Spark job: the wave's contexts ranked and written by the executors; each partition's tally."""
    sc = spark.sparkContext
    slices = min(partitions or sc.defaultParallelism, len(contexts))
    movies_bc = sc.broadcast(movies)
    try:
        return (sc.parallelize(contexts, slices)
                .mapPartitions(partial(_rerank_partition, settings, model, shipped, movies_bc))
                .collect())
    finally:
        movies_bc.destroy()
