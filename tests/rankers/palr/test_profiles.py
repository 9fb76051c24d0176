"""The Spark LLM jobs: `run_profiles` (every fixture user; skip unchanged; resume after a kill; re-profile a
changed history) and `run_rerank_spark` (the same records as `run_rerank`).

One SparkSession (`local[2]`) serves the module. Real parts only: the fixture's CSVs, the local backend,
the fake GLM server driven by the real zhipuai client, the `sparrow-llm` command in a subprocess, and the
stand-in host under the bridge launcher.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sparrow_llm.bridge.client import BridgeClient

from sparrow_llm.domain import Rated, UserHistory, UserRating
from sparrow_llm.config import Settings
from sparrow_llm.rankers.llm.local_minilm import LocalMiniLMBackend
from sparrow_llm.rankers.palr.ranker import history_hash, write_profile
from sparrow_llm.rankers.palr.prompts import Prompts
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.schema import (
    COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER, FILE_PROFILES, MOVIES_CSV, RATINGS_CSV, REDIS_PROFILE,
)
from sparrow_llm.pipeline.rerank_spark import run_rerank_spark
from sparrow_llm.rankers.palr.profiles import PROFILE_COLUMNS, movie_metas, run_profiles
from sparrow_llm.rankers.palr.reasons import data_profile
from sparrow_llm.spark import read_movies, read_ratings
from sparrow_llm.domain import Profile
from sparrow_llm.store import FileStore

from tests.conftest import SHARED
from tests.fake_glm import VALID_KEY, Reply, fake_glm  # noqa: F401  (fixture)

LOCAL = "local-minilm"


@pytest.fixture(scope="module")
def ratings(fixture_webroot) -> pd.DataFrame:
    return pd.read_csv(fixture_webroot / RATINGS_CSV)


def _settings(store_dir: Path, **llm) -> Settings:
    # The MiniLM stand-in: every fixture user in seconds (the real local model's profiles are tested in
    # tests/rankers/llm/test_local_lm.py).
    return Settings().replace(host={"shared_dir": SHARED}, store={"dir": store_dir},
                              llm={"backend": LOCAL, **llm})


def _profile_files(store_dir: Path) -> dict[int, Path]:
    return {int(p.stem): p for p in (store_dir / FILE_PROFILES).glob("*.json")}


def _signatures(store_dir: Path) -> dict[int, tuple[int, int]]:
    """(inode, mtime) per profile file: a rewrite (temp file renamed over) changes both."""
    return {u: (p.stat().st_ino, p.stat().st_mtime_ns) for u, p in _profile_files(store_dir).items()}


def _histories(ratings: pd.DataFrame) -> dict[int, tuple[UserRating, ...]]:
    """Each user's ratings in (timestamp, movieId) order, by pandas: the oracle of the Spark grouping."""
    ordered = ratings.sort_values([COL_USER, COL_TIMESTAMP, COL_MOVIE, COL_RATING], kind="stable")
    return {int(u): tuple(UserRating(int(m), float(r), int(t)) for m, r, t in
                          g[[COL_MOVIE, COL_RATING, COL_TIMESTAMP]].itertuples(index=False))
            for u, g in ordered.groupby(COL_USER, sort=True)}


@pytest.fixture(scope="module")
def profiled(spark, tmp_path_factory):
    """Profiles of every fixture user with the local backend, in a fresh store."""
    store_dir = tmp_path_factory.mktemp("profiles") / "store"
    summary = run_profiles(_settings(store_dir), spark=spark, progress=False)
    return store_dir, summary


def _metas(spark, webroot: Path):
    return movie_metas(read_movies(spark, webroot / MOVIES_CSV), read_ratings(spark, webroot / RATINGS_CSV))


def test_movie_metas_match_the_csvs(spark, fixture_webroot, ratings):
    metas = _metas(spark, fixture_webroot)
    movies = pd.read_csv(fixture_webroot / MOVIES_CSV)
    assert sorted(metas) == sorted(movies[COL_MOVIE])
    toy, jumanji = metas[1], metas[2]
    assert (toy.title, toy.release_year) == ("Toy Story", 1995)
    assert toy.genres == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    stats = ratings.groupby(COL_MOVIE)[COL_RATING].agg(["mean", "count"])
    for meta in (toy, jumanji):
        assert meta.average_rating == pytest.approx(stats.loc[meta.movie_id, "mean"])
        assert meta.rating_number == stats.loc[meta.movie_id, "count"]
    unrated = set(metas) - set(stats.index)
    assert unrated and all(metas[m].rating_number == 0 for m in unrated)


def test_every_user_gets_a_profile(profiled, ratings, spark, fixture_webroot):
    store_dir, summary = profiled
    users = set(ratings[COL_USER].unique())
    assert (summary.users, summary.written, summary.skipped, summary.failed) == (len(users), len(users), 0, 0)
    assert summary.llm_calls == len(users) and summary.backend == LOCAL
    files = _profile_files(store_dir)
    assert set(files) == users
    store = FileStore(store_dir)
    histories = _histories(ratings)
    metas = _metas(spark, fixture_webroot)
    prompts = Prompts.from_settings(Settings().llm)
    for user in sorted(users):
        profile = store.get_profile(user)
        assert isinstance(profile, Profile) and profile.backend == LOCAL and profile.version == summary.version
        assert profile.history_hash == history_hash(histories[user]), user  # Spark's order is (timestamp, movieId)
    for user in (1, 7, max(users)):  # the text is the local backend's over the same history and movies
        expected = write_profile(LocalMiniLMBackend(), UserHistory(user, True, histories[user]), metas, prompts)
        assert store.get_profile(user).text == expected.text


def test_a_rerun_skips_every_unchanged_user(profiled, spark, tmp_path):
    store_dir, first = profiled
    before = _signatures(store_dir)
    again = run_profiles(_settings(store_dir), spark=spark, progress=False, parquet_out=tmp_path / "profiles")
    assert (again.users, again.written, again.skipped, again.llm_calls) == (first.users, 0, first.users, 0)
    assert _signatures(store_dir) == before  # nothing rewritten
    # The Parquet output holds every profile (the unchanged ones too), in the store's JSON names.
    table = pd.read_parquet(tmp_path / "profiles")
    assert list(table.columns) == list(PROFILE_COLUMNS)
    assert set(PROFILE_COLUMNS) <= set(json.loads(FileStore(store_dir).get_profile(1).to_json()))
    assert len(table) == first.users and table[COL_USER].is_unique
    row = table.set_index(COL_USER).loc[1]
    stored = FileStore(store_dir).get_profile(1)
    assert (row["text"], row["historyHash"], row["createdAt"]) == (stored.text, stored.history_hash,
                                                                   stored.created_at_ms)


def test_a_changed_history_is_profiled_again_alone(profiled, spark, ratings, fixture_webroot, tmp_path):
    source_dir, first = profiled
    store_dir = tmp_path / "store"
    shutil.copytree(source_dir, store_dir)
    user = 7
    unseen = sorted(set(ratings[COL_MOVIE]) - set(ratings.loc[ratings[COL_USER] == user, COL_MOVIE]))[0]
    changed = tmp_path / "ratings.csv"
    shutil.copyfile(fixture_webroot / RATINGS_CSV, changed)
    with changed.open("a") as fh:
        fh.write(f"{user},{unseen},4.5,{int(ratings[COL_TIMESTAMP].max()) + 1}\n")
    old_hash = FileStore(store_dir).get_profile(user).history_hash
    before = _signatures(store_dir)

    summary = run_profiles(_settings(store_dir), ratings=changed, spark=spark, progress=False)
    assert (summary.written, summary.skipped, summary.llm_calls) == (1, first.users - 1, 1)
    after = _signatures(store_dir)
    assert [u for u in before if after[u] != before[u]] == [user]
    assert FileStore(store_dir).get_profile(user).history_hash != old_hash


def test_profiles_go_to_redis_too(redis_db, spark, ratings):
    users = sorted(ratings[COL_USER].unique())[:20]
    settings = Settings().replace(host={"shared_dir": SHARED}, store={"kind": "redis", "redis_port": redis_db.port},
                                  llm={"backend": LOCAL})
    first = run_profiles(settings, users=users, spark=spark, progress=False)
    client = redis_db.client()
    stored = {u: Profile.from_json(client.get(REDIS_PROFILE.format(user_id=u))) for u in users}
    assert first.written == 20 and all(p.user_id == u and p.backend == LOCAL for u, p in stored.items())
    again = run_profiles(settings, users=users, spark=spark, progress=False)
    assert (again.written, again.skipped, again.llm_calls) == (0, 20, 0)


def test_the_local_language_model_writes_profiles_in_batches(spark, tmp_path):
    """SmolLM2 generates the profiles: one partition, its four users' prompts generated as one batch; a rerun
    makes no call."""
    settings = _settings(tmp_path / "store", backend="local", history_items=5, local_threads=1, local_batch=4,
                         local_profile_tokens=12)
    first = run_profiles(settings, users=[1, 2, 3, 4], partitions=1, spark=spark, progress=False)
    assert first.backend == "local:SmolLM2-135M-Instruct.Q4_1" and first.concurrency == 4
    assert (first.written, first.llm_calls, first.failed) == (4, 4, 0)
    assert first.prompt_tokens > 4 * 60 and 4 <= first.completion_tokens <= 4 * 12
    stored = FileStore(tmp_path / "store").get_profile(1)
    assert stored.text and stored.backend == first.backend and stored.meta["completion_tokens"] > 0
    again = run_profiles(settings, users=[1, 2, 3, 4], partitions=1, spark=spark, progress=False)
    assert (again.written, again.skipped, again.llm_calls) == (0, 4, 0)


# ---- resume after a kill, against the fake GLM ------------------------------------------------------------------

LATENCY_S = 0.4
PARTITIONS, CONCURRENCY = 2, 2
IN_FLIGHT = PARTITIONS * CONCURRENCY


def _digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def _profile_answer(body: dict) -> Reply:
    """A profile naming its prompt, so a stored profile tells which request it came from."""
    return Reply(content=f"profile {_digest(body['messages'][0]['content'])}", delay_s=LATENCY_S, usage=(100, 10))


def _answer(profile: Profile) -> str:
    """What the backend answered: the stored text, or the model's text that a data profile replaced."""
    return profile.meta.get("model_text", profile.text)


def _prompt_digests(requests: list[dict]) -> list[str]:
    return [_digest(body["messages"][0]["content"]) for body in requests]


def test_a_killed_job_resumes_without_asking_twice(fake_glm, spark, ratings, tmp_path):
    fake_glm.default = _profile_answer
    users = sorted(ratings[COL_USER].unique())[:60]
    store_dir = tmp_path / "store"
    env = {**os.environ, "SPARROW_LLM_BACKEND": "zhipuai", "ZHIPUAI_API_KEY": VALID_KEY,
           "ZHIPUAI_BASE_URL": fake_glm.url, "SPARROW_LLM_CONCURRENCY": str(CONCURRENCY),
           "SPARROW_LLM_SHARED": str(SHARED), "SPARROW_LLM_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "sparrow_llm.cli", "profiles", "--users", ",".join(map(str, users)),
           "--master", "local[2]", "--partitions", str(PARTITIONS), "--store-dir", str(store_dir), "--no-progress"]
    with (tmp_path / "job.log").open("wb") as log:
        job = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(_profile_files(store_dir)) < IN_FLIGHT and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.poll() is None, f"the job ended before the kill:\n{(tmp_path / 'job.log').read_text()[-3000:]}"
    finally:
        try:
            os.killpg(job.pid, signal.SIGKILL)  # the driver and its JVM; Spark's Python daemon follows its JVM
        except ProcessLookupError:  # it had ended already (reported above)
            pass
        job.wait()
    # Calls still sleeping in the fake end; then nothing more may arrive (no worker outlived the kill).
    deadline = time.monotonic() + 10
    while fake_glm.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_calls = fake_glm.calls
    time.sleep(1.0)
    assert fake_glm.calls == killed_calls

    stored = _profile_files(store_dir)
    assert IN_FLIGHT <= len(stored) < len(users)
    for path in stored.values():  # whole records only (temp files renamed over, never written in place)
        assert _answer(Profile.from_json(path.read_text())).startswith("profile ")
    assert killed_calls <= len(stored) + IN_FLIGHT
    stored_digests = {_answer(FileStore(store_dir).get_profile(u)).split()[1] for u in stored}

    settings = _settings(store_dir, backend="zhipuai", api_key=VALID_KEY, base_url=fake_glm.url,
                         concurrency=CONCURRENCY)
    summary = run_profiles(settings, users=users, spark=spark, partitions=PARTITIONS, progress=False,
                           parquet_out=tmp_path / "profiles")
    rerun = _prompt_digests(fake_glm.requests[killed_calls:])
    assert (summary.users, summary.skipped, summary.written, summary.failed) == (
        len(users), len(stored), len(users) - len(stored), 0)
    assert summary.llm_calls == len(rerun) == len(users) - len(stored)
    assert summary.prompt_tokens == 100 * len(rerun) and summary.completion_tokens == 10 * len(rerun)
    assert not set(rerun) & stored_digests and len(set(rerun)) == len(rerun)  # only users not yet stored, once
    assert fake_glm.calls <= len(users) + IN_FLIGHT
    assert set(_profile_files(store_dir)) == set(users)
    store = FileStore(store_dir)
    texts = {u: _answer(store.get_profile(u)).split()[1] for u in users}
    assert set(texts.values()) == stored_digests | set(rerun)  # each profile is the answer to its own request
    table = pd.read_parquet(tmp_path / "profiles")
    assert sorted(table[COL_USER]) == users  # every user once


def test_a_true_profile_is_the_models_and_a_false_one_is_replaced(fake_glm, spark, ratings, fixture_webroot,
                                                                   tmp_path):
    settings = _settings(tmp_path / "store", backend="zhipuai", api_key=VALID_KEY, base_url=fake_glm.url,
                         concurrency=1)
    histories, metas = _histories(ratings), _metas(spark, fixture_webroot)
    rated = {u: [Rated(metas[r.movie_id], r.rating) for r in histories[u] if r.movie_id in metas] for u in (1, 2)}
    prompt = Prompts.from_settings(settings.llm).profile_request(rated[1]).messages[0]["content"]
    true_profile, false_profile = data_profile(rated[1]), "Likes: 1995, 1990, 1994, 1994, 1994,"
    fake_glm.default = lambda body: Reply(content=true_profile if body["messages"][0]["content"] == prompt
                                          else false_profile, usage=(50, 5))
    summary = run_profiles(settings, users=[1, 2], spark=spark, partitions=1, progress=False)
    assert (summary.written, summary.by_model, summary.llm_calls) == (2, 1, 2)
    assert "2 written (1 by the model, 1 from the data where the model's was not true)," in summary.line()
    store = FileStore(tmp_path / "store")
    kept, replaced = store.get_profile(1), store.get_profile(2)
    assert kept.text == true_profile and kept.meta["written_by"] == "model" and "model_text" not in kept.meta
    assert replaced.text == data_profile(rated[2]) != false_profile
    assert replaced.meta["written_by"] == "data" and replaced.meta["model_text"] == false_profile


def test_a_failing_user_is_counted_not_fatal(fake_glm, spark, ratings, tmp_path):
    users = sorted(ratings[COL_USER].unique())[:6]
    fake_glm.push(Reply(status=400))  # one request refused for good (400 is not retried)
    fake_glm.default = Reply(content="likes films", usage=(50, 5))
    settings = _settings(tmp_path / "store", backend="zhipuai", api_key=VALID_KEY, base_url=fake_glm.url,
                         concurrency=1)
    summary = run_profiles(settings, users=users, spark=spark, partitions=1, progress=False)
    assert (summary.users, summary.written, summary.failed, summary.llm_calls) == (6, 5, 1, 6)
    assert len(_profile_files(tmp_path / "store")) == 5
    again = run_profiles(settings, users=users, spark=spark, partitions=1, progress=False)
    assert (again.written, again.skipped, again.failed, again.llm_calls) == (1, 5, 0, 1)


# ---- rerank in Spark --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["llm", "recent"])
def test_rerank_spark_writes_what_run_rerank_writes(host, spark, model, tmp_path):
    with BridgeClient(host.settings.bridge) as client:
        users = client.user_ids()[:4] + [999_999]  # and one the host does not know
        # Short prompts: fewer movie texts for the local backend's MiniLM to embed in each of three processes.
        # A configured fusion weight: the LLM takes part in every user's order (an uncalibrated one would not).
        settings = host.settings.replace(store={"dir": tmp_path / "a"},
                                         llm={"rank_k": 12, "rank_top_n": 6, "history_items": 12, "fusion_weight": 1.0,
                                              "reasons": 0})  # the model's reasons: tests/rankers/palr/test_ranker.py
        (tmp_path / "a").mkdir()
        if model == "llm":  # stored profiles: the ranker then asks the backend only to rank
            assert run_profiles(settings, users=users, spark=spark, progress=False).written == 4
        shutil.copytree(tmp_path / "a", tmp_path / "b", dirs_exist_ok=True)
        local = run_rerank(settings, model, users=users, client=client, store=FileStore(tmp_path / "a"),
                           progress=False)
        spark_run = run_rerank_spark(settings, model, users=users, client=client, store=FileStore(tmp_path / "b"),
                                     spark=spark, partitions=2, progress=False)
    assert (spark_run.users, spark_run.written, spark_run.skipped, spark_run.failed) == (
        local.users, local.written, local.skipped, local.failed) == (5, 4, 1, 0)
    timing = ("llm_ms",)  # wall time of the calls: measured, not the same twice
    assert {k: v for k, v in spark_run.counters.items() if k not in timing} == {
        k: v for k, v in local.counters.items() if k not in timing}
    if model == "llm":
        parses = sum(v for k, v in spark_run.counters.items() if k.startswith("parse "))
        assert parses == spark_run.counters["cache miss"] == spark_run.written
        assert spark_run.counters["llm_calls"] == spark_run.written  # one call each: the profile came stored
    a, b = FileStore(tmp_path / "a"), FileStore(tmp_path / "b")
    for user in users[:-1]:
        want, got = a.get_record(model, user), b.get_record(model, user)
        assert got is not None and got.items == want.items, user
        untimed = lambda meta: {k: v for k, v in meta.items() if k not in timing}  # noqa: E731
        assert (got.backend, got.version, untimed(got.meta)) == (want.backend, want.version, untimed(want.meta))
    assert b.get_record(model, users[-1]) is None
