"""One SparkSession helper for every job, the host's CSVs as DataFrames, and a progress bar of Spark tasks."""
from __future__ import annotations

import os
import re
import sys
import threading
import uuid
from contextlib import contextmanager
from typing import Iterator

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from .progress import progress_bar
from .schema import COL_GENRES, COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_TITLE, COL_USER

__all__ = ["spark_session", "session", "read_csv", "read_ratings", "read_movies", "task_progress", "local_cores"]

_LOCAL_MASTER = re.compile(r"^local(?:\[(\d+|\*)(?:,\d+)?\])?$")
RATINGS_SCHEMA = StructType([
    StructField(COL_USER, LongType()), StructField(COL_MOVIE, LongType()),
    StructField(COL_RATING, DoubleType()), StructField(COL_TIMESTAMP, LongType()),
])
MOVIES_SCHEMA = StructType([
    StructField(COL_MOVIE, LongType()), StructField(COL_TITLE, StringType()), StructField(COL_GENRES, StringType()),
])


def spark_session(master: str = "local[*]", app: str = "sparrow-llm", driver_memory: str = "4g"
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
    cores = local_cores(master)
    if cores is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * cores))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def local_cores(master: str) -> int | None:
    """Worker threads of a local master ("local", "local[4]", "local[*]", "local[2,3]"); None for a cluster."""
    match = _LOCAL_MASTER.match(master)
    if match is None:
        return None
    threads = match.group(1)
    if threads is None:
        return 1
    return (os.cpu_count() or 1) if threads == "*" else int(threads)


def read_csv(spark: SparkSession, uri: str | os.PathLike | list, schema: StructType) -> DataFrame:
    """CSV with a header that must name `schema`'s columns in order (enforceSchema=False makes Spark check it,
    so a file with swapped columns fails instead of loading silently), RFC 4180 quoting ("" inside quotes is
    a quote, unlike Spark's default backslash escape), and no silent nulls for malformed rows."""
    uris = [os.fspath(u) for u in uri] if isinstance(uri, list) else os.fspath(uri)
    return (spark.read.schema(schema)
            .options(header=True, enforceSchema=False, quote='"', escape='"', mode="FAILFAST")
            .csv(uris))


def read_ratings(spark: SparkSession, uri: str | os.PathLike) -> DataFrame:
    """ratings.csv (userId, movieId, rating, timestamp) as longs and a double."""
    return read_csv(spark, uri, RATINGS_SCHEMA)


def read_movies(spark: SparkSession, uri: str | os.PathLike) -> DataFrame:
    """movies.csv (movieId, title, genres), quoted titles with commas included (the host drops those)."""
    return read_csv(spark, uri, MOVIES_SCHEMA)


@contextmanager
def session(spark: SparkSession | None, master: str, app: str) -> Iterator[SparkSession]:
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
def task_progress(spark: SparkSession, desc: str, enabled: bool) -> Iterator[None]:
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
        with progress_bar(desc=desc, unit="task", total=0) as bar:
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
