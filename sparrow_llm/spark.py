"""One SparkSession helper for every job, the host's CSVs as DataFrames, and a progress bar of Spark tasks."""
from __future__ import annotations

import os
import re
import sys
import threading
import traceback
import uuid
import warnings
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

from pyspark import SparkContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from .config import ConfigError
from .progress import progress_bar
from .schema import COL_GENRES, COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_TITLE, COL_USER

__all__ = ["spark_session", "session", "read_csv", "read_ratings", "read_movies", "task_progress", "local_cores",
           "csv_errors", "SparkTimeout"]

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
    # A failed task reaches the driver as the job's exception (one line from `csv_errors` or the CLI); these two
    # loggers would print its Java stack trace first, at ERROR.
    config = spark.sparkContext._jvm.org.apache.logging.log4j.core.config.Configurator
    for name in ("org.apache.spark.executor.Executor", "org.apache.spark.scheduler.TaskSetManager"):
        config.setLevel(name, spark.sparkContext._jvm.org.apache.logging.log4j.Level.FATAL)
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


def _local_path(uri: str) -> str | None:
    """The path of a local file's URI (a plain path or file:), None for a cluster's (hdfs:, s3a: ...)."""
    parsed = urlparse(uri)
    return parsed.path if parsed.scheme == "file" else uri if not parsed.scheme else None


def _check_local_csv(uri: str, schema: StructType) -> None:
    """What can be told of a local CSV before Spark reads it, as one ConfigError naming the file: missing,
    empty, or a header other than `schema`'s columns (Spark finds a malformed row only when a job reads it:
    `csv_errors`)."""
    path = _local_path(uri)
    if path is None or any(c in path for c in "*?[{"):  # a cluster's file or a glob: Spark's own checks
        return
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        raise ConfigError(f"{path}: the file is empty (not even a header line)")
    header = [name.strip().strip('"') for name in first.decode("utf-8", "replace").strip().split(",")]
    if header != schema.names:
        raise ConfigError(f"{path}: not a valid CSV file (its header names {', '.join(header)}; expected "
                          f"{', '.join(schema.names)})")


def read_csv(spark: SparkSession, uri: str | os.PathLike | list, schema: StructType) -> DataFrame:
    """CSV with a header that must name `schema`'s columns in order (enforceSchema=False makes Spark check it,
    so a file with swapped columns fails instead of loading silently), RFC 4180 quoting ("" inside quotes is
    a quote, unlike Spark's default backslash escape), and no silent nulls for malformed rows (FAILFAST: the
    job fails, and `csv_errors` makes that one line naming the file). A local file is checked first."""
    uris = [os.fspath(u) for u in uri] if isinstance(uri, list) else os.fspath(uri)
    for one in uris if isinstance(uris, list) else [uris]:
        _check_local_csv(one, schema)
    return (spark.read.schema(schema)
            .options(header=True, enforceSchema=False, quote='"', escape='"', mode="FAILFAST")
            .csv(uris))


def read_ratings(spark: SparkSession, uri: str | os.PathLike) -> DataFrame:
    """ratings.csv (userId, movieId, rating, timestamp) as longs and a double."""
    return read_csv(spark, uri, RATINGS_SCHEMA)


def read_movies(spark: SparkSession, uri: str | os.PathLike) -> DataFrame:
    """movies.csv (movieId, title, genres), quoted titles with commas included (the host drops those)."""
    return read_csv(spark, uri, MOVIES_SCHEMA)


_READ_FILE = re.compile(r"Encountered error while reading file (\S+?)\.?\s+SQLSTATE")
_MALFORMED_LINE = re.compile(r"Malformed CSV record: (.*?)(?: SQLSTATE|$)", re.M)
_CSV_CAUSES = (  # Spark's cause of a failed CSV read -> ours, from the Java exception's text
    (re.compile(r"NumberFormatException: (.*)"), "a value that is not a number ({0})"),
    (re.compile(r"Header: (.*)\n\s*Schema: (.*)"), "its header names {0}; expected {1}"),
)


# A job that fails inside toPandas first warns with the whole Java stack, then raises the same error (which
# `csv_errors` or the CLI makes one line): the warning adds nothing but the stack.
warnings.filterwarnings("ignore", message=r"toPandas attempted Arrow optimization .* can not continue",
                        category=UserWarning)


class SparkTimeout(TimeoutError):
    """A Spark job's Python side gave up waiting for its JVM (pyspark's local sockets)."""


def _csv_error(exc: Exception) -> ConfigError | None:
    """A failed read of a CSV file as one line naming the file, the line (a local file) and the cause."""
    text = str(exc)
    found = _READ_FILE.search(text)
    if found is None:
        return None
    uri = found.group(1)
    path = _local_path(uri) or uri
    if (match := _MALFORMED_LINE.search(text)) is not None:
        line = _line_number(path, match.group(1))
        where = "a line" if line is None else f"line {line}"
        return ConfigError(f"{path}: not a valid CSV file ({where} does not have the header's fields: "
                           f"{match.group(1)!r})")
    for pattern, cause in _CSV_CAUSES:
        if (match := pattern.search(text)) is not None:
            return ConfigError(f"{path}: not a valid CSV file ({cause.format(*match.groups())})")
    causes = re.findall(r"Caused by: [\w.$]+: (.+)", text)
    return ConfigError(f"{path}: cannot be read ({causes[-1].strip() if causes else 'Spark could not read it'})")


def _line_number(path: str, record: str) -> int | None:
    """The first line of a local file that is `record` (None: not local, or not found)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return next((n for n, line in enumerate(f, 1) if line.rstrip("\r\n") == record), None)
    except OSError:
        return None


def _from_pyspark(exc: BaseException) -> bool:
    return any(f"{os.sep}pyspark{os.sep}" in frame.filename for frame in traceback.extract_tb(exc.__traceback__))


@contextmanager
def csv_errors(app: str = "Spark job") -> Iterator[None]:
    """Spark's failures that name no file or limit, made one line: a CSV read that failed (FAILFAST) names the
    file, the line and the cause (a ConfigError); a bare "timed out" of pyspark's sockets to its JVM says which
    limit and how to raise it (SparkTimeout). Anything else passes as it is."""
    try:
        yield
    except TimeoutError as exc:
        if isinstance(exc, SparkTimeout) or not _from_pyspark(exc):
            raise
        raise SparkTimeout(
            f"{app}: pyspark gave up waiting for its JVM after {os.environ.get('SPARK_AUTH_SOCKET_TIMEOUT', '15')} s "
            f"({exc or 'timed out'}): the machine is overloaded; raise SPARK_AUTH_SOCKET_TIMEOUT or run fewer "
            "Spark cores (--master local[N])") from None
    except ConfigError:
        raise
    except Exception as exc:
        translated = _csv_error(exc)
        if translated is None:
            raise
        raise translated from None


@contextmanager
def session(spark: SparkSession | None, master: str, app: str) -> Iterator[SparkSession]:
    """`spark`, else a session from `spark_session(master)`, stopped on exit only when this call started it.

    These jobs run Python in the executors: unless PYSPARK_PYTHON says otherwise, the workers run this
    interpreter (the one with sparrow_llm installed), not whatever `python3` is first on the PATH.
    """
    # Owned only when no SparkContext lives in this process: `getActiveSession` is per JVM thread and can miss the
    # live session, which `spark_session`'s getOrCreate would then return, and this call would stop a session
    # its caller still uses.
    owned = spark is None and SparkContext._active_spark_context is None
    if owned:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = spark or spark_session(master, app=app)
    try:
        with csv_errors(app):
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
