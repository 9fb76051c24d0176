"""The Spark jobs on a real standalone cluster (a master and two 1-core workers on this machine, started with
PySpark's own spark-class): the profile job run with `master=spark://...` writes the same profiles as with
`local[2]`, and the features and rerank jobs run there unchanged."""
from __future__ import annotations

import json
import sys
import urllib.request

import pandas as pd
import pytest

from sparrow_llm.config import Settings
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.pipeline import rerank_spark
from sparrow_llm.pipeline.rerank_spark import run_rerank_spark
from sparrow_llm.rankers.clickprompt.samples_spark import run_features
from sparrow_llm.rankers.palr.profiles import run_profiles
from sparrow_llm.schema import COL_USER, MOVIES_CSV
from sparrow_llm.spark import spark_session
from sparrow_llm.store import FileStore

from tests.cluster import spark_cluster  # noqa: F401  (fixture)
from tests.conftest import SHARED

USERS = 30  # the fixture's first users: enough for both executors, quick on two cores


def _settings(store_dir) -> Settings:
    return Settings().replace(host={"shared_dir": SHARED}, store={"dir": store_dir}, llm={"backend": "local-minilm"})


def _apps(cluster) -> list[dict]:
    """The applications the master has run (its JSON status page)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.ui_port}/json/", timeout=5) as resp:
        status = json.load(resp)
    return status.get("activeapps", []) + status.get("completedapps", [])


@pytest.fixture(autouse=True)
def _executor_python(monkeypatch):
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(autouse=True)
def _no_local_session():
    """A running local session would be handed to the jobs by getOrCreate, master or not: stop it first
    (the session-wide `spark` fixture's, when an earlier test started it; a later one starts afresh)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


def test_the_profile_job_on_the_cluster_writes_what_local_writes(spark_cluster, ratings, tmp_path):
    users = sorted(ratings[COL_USER].unique())[:USERS]
    local = run_profiles(_settings(tmp_path / "local"), master="local[2]", users=users, progress=False)
    on_cluster = run_profiles(_settings(tmp_path / "cluster"), master=spark_cluster.url, users=users, progress=False)
    assert (on_cluster.users, on_cluster.written, on_cluster.failed) == (local.users, local.written, 0) == (
        USERS, USERS, 0)
    assert on_cluster.partitions == 2  # the cluster's two cores
    assert any(a["name"] == "sparrow-llm-profiles" for a in _apps(spark_cluster)), "it ran on no cluster"
    here, there = FileStore(tmp_path / "local"), FileStore(tmp_path / "cluster")
    for user in users:
        mine, theirs = here.get_profile(int(user)), there.get_profile(int(user))
        assert (theirs.text, theirs.backend, theirs.version, theirs.history_hash) == (
            mine.text, mine.backend, mine.version, mine.history_hash), user


def test_features_and_rerank_run_on_the_cluster(spark_cluster, host, fixture_webroot, ratings, tmp_path, monkeypatch):
    # Batches of 4 users, waves of 2 batches: the 12 users take two Spark jobs, the second fetched during the first.
    settings = host.settings.replace(bridge={"batch_users": 4})
    monkeypatch.setattr(rerank_spark, "WAVE_USERS", 8)
    subset = tmp_path / "ratings.csv"  # the first users' ratings: the same jobs, less to shuffle on two cores
    ratings[ratings[COL_USER] <= USERS].to_csv(subset, index=False)
    spark = spark_session(spark_cluster.url, app="sparrow-llm-cluster-jobs")
    try:
        features = run_features(tmp_path / "samples", ratings=subset, movies=fixture_webroot / MOVIES_CSV,
                                spark=spark)
        rows = {name: sum(len(pd.read_csv(part)) for part in (tmp_path / "samples" / name).glob("*.csv"))
                for name in features.rows}
        assert rows == dict(features.rows) and rows["train"] > rows["test"] > 0
        store = FileStore(tmp_path / "store")
        users = list(range(1, 13))
        on_cluster = run_rerank_spark(settings, "recent", users=users, store=store, spark=spark, progress=False)
    finally:
        spark.stop()
    in_process = run_rerank(settings, "recent", users=users, store=FileStore(tmp_path / "in-process"), progress=False)
    assert (on_cluster.users, on_cluster.written) == (in_process.users, in_process.written) and in_process.written > 0
    for user in users:
        mine, theirs = FileStore(tmp_path / "in-process").get_record("recent", user), store.get_record("recent", user)
        assert (theirs is None) == (mine is None)
        if mine is not None:
            assert [(i.movie_id, i.reason) for i in theirs.items] == [(i.movie_id, i.reason) for i in mine.items]
    assert any(a["name"] == "sparrow-llm-cluster-jobs" for a in _apps(spark_cluster)), "it ran on no cluster"
