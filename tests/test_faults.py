"""The Python side of the bad-input and fault suite (the stage's HTTP, store-file and Redis cases are JUnit:
StoreFaultTest, RedisFaultTest, StorePathsTest). Each case asserts its exact outcome: the exit code and the
one error line, what the parser picks, what the store holds afterwards."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sparrow_llm.cli import main
from sparrow_llm.config import LLMSettings, Settings
from sparrow_llm.domain import RankedItem, Record
from sparrow_llm.pipeline.rerank import RerankSummary, rank_contexts
from sparrow_llm.rankers.llm.base import LLMUnavailable, make_backend
from sparrow_llm.rankers.llm.resilience import server_message
from sparrow_llm.rankers.palr.parsing import PARSE_FALLBACK, parse_ranking
from sparrow_llm.rankers.palr.prompts import Prompts
from sparrow_llm.rankers.palr.ranker import PalrRanker
from sparrow_llm.store import FileStore, StoreUnavailable, adopt_legacy_store, open_default_store, open_store
from sparrow_llm.config import StoreSettings

from tests.conftest import SHARED, host_settings, start_redis
from tests.fake_glm import VALID_KEY, Reply, context, fake_glm, glm_settings  # noqa: F401 (fixtures)

LABELS = ["Toy Story (1995)", "Heat (1995)", "Ghost (1990)", "Alien (1979)", "Casino (1995)"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, never a traceback
    assert err[0].startswith("sparrow-llm: error: ")
    return err[0]


# ---- LLM answers -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, answer", [
    ("invented index, a title in its reason", '[[99, "as creepy as Ghost"]]'),
    ("invented indexes only", "[[7, \"a\"], [12, \"b\"]]"),
    ("a reason line naming a title", "[42, 'like Heat (1995) but darker']"),
    ("empty", ""),
    ("prose refusal", "I cannot help with movie choices."),
    ("garbage brackets", "][}{"),
    ("nesting deeper than json's recursion limit", "[" * 5000),
])
def test_unusable_answers_pick_nothing(name, answer):
    parsed = parse_ranking(answer, LABELS)
    assert (parsed.indexes, parsed.status) == ((), PARSE_FALLBACK), name


def test_a_title_as_the_pick_itself_still_counts():
    parsed = parse_ranking('["Ghost (1990)", "Alien"]', LABELS)
    assert parsed.indexes == (2, 3)


@pytest.fixture()
def store(tmp_path):
    return FileStore(tmp_path / "store", fsync=False)


def _palr(settings: LLMSettings, store) -> PalrRanker:
    return PalrRanker(make_backend(settings), Prompts.from_settings(settings), store)


def test_an_unusable_answer_is_not_cached(fake_glm, glm_settings, store):
    fake_glm.push(Reply(content="sorry, no idea"))  # the profile call gets it; the rank call too
    fake_glm.default = Reply(content="garbage ][")
    first = _palr(glm_settings, store).rank(context(1, profile="Likes cartoons."))
    assert first.is_fallback
    fake_glm.default = Reply(content='[[2, "fun"]]')
    again = _palr(glm_settings, store).rank(context(1, profile="Likes cartoons."))
    assert again.meta["parse"] == "ok" and again.meta["cache"] == "miss"  # asked again: nothing pinned


def _good_record(user_id: int, age_s: float = 0.0) -> Record:
    return Record("llm", user_id, (RankedItem(8, 1.0, "good"),), "zhipuai:glm-4-flash", "palr-v2",
                  created_at_ms=int((time.time() - age_s) * 1000), meta={"parse": "ok"})


@pytest.mark.parametrize("age_s, kept", [(60, True), (8 * 24 * 3600, False)])
def test_a_fallback_never_replaces_a_fresh_good_record(fake_glm, glm_settings, store, age_s, kept):
    store.put_records([_good_record(1, age_s)])
    fake_glm.default = Reply(status=500)
    settings = dataclasses.replace(glm_settings, max_retries=0)
    summary = RerankSummary("llm")
    rank_contexts(_palr(settings, store), [context(1, profile="p")], store, summary, keep_fresh_s=7 * 24 * 3600)
    record = store.get_record("llm", 1)
    assert (summary.kept, summary.written) == ((1, 0) if kept else (0, 1))
    assert (record.meta["parse"] == "ok") is kept
    assert summary.all_llm_failed and "HTTP 500" in summary.last_error


def test_retry_after_past_the_budget_fails_at_once(fake_glm, glm_settings):
    fake_glm.default = Reply(status=429, headers={"Retry-After": "100000"})
    backend = make_backend(dataclasses.replace(glm_settings, max_retries=4, retry_budget_s=5.0))
    started = time.monotonic()
    with pytest.raises(Exception, match="rate-limited"):
        backend.complete([{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.0)
    assert time.monotonic() - started < 2.0 and fake_glm.calls == 1


def test_abandoned_requests_still_count_against_the_limit(fake_glm, glm_settings):
    import threading

    fake_glm.default = Reply(content="late", delay_s=0.3)
    backend = make_backend(dataclasses.replace(glm_settings, timeout_s=0.2, max_retries=0, concurrency=2))

    def ask():
        try:
            backend.complete([{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.0)
        except Exception:
            pass

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_glm.max_in_flight <= 2


def test_the_key_is_scrubbed_before_the_server_text_is_cut():
    secret = "secret-1234567890abcdef"

    class Response:
        text = "x" * 190 + f" Bearer {secret} and more"

        def json(self):
            raise ValueError

    message = server_message(Response(), secret)
    assert "secret-12" not in message and len(message) <= 200
    Response.text = f"bad key {secret[:9]}"  # a server that echoes the key cut short
    assert "secret-" not in server_message(Response(), secret)


# ---- CLI and environment -----------------------------------------------------------------------

@pytest.mark.parametrize("name, argv, env, expected", [
    ("empty user list", ["rerank", "--model", "recent", "--users", ""], {}, "expected at least one user id"),
    ("negative sample", ["eval", "--sample", "-3"], {}, "argument --sample: expected a number >= 1"),
    ("NaN learning rate", ["llm", "finetune", "--lr", "nan"], {}, "argument --lr: expected a number >= 1e-12"),
    ("port out of range", ["bridge", "info"], {"PORT": "99999"}, "PORT must be <= 65535"),
    ("NaN rate", ["bridge", "info"], {"SPARROW_LLM_RPS": "nan"}, "SPARROW_LLM_RPS must be a finite number"),
    ("infinite timeout", ["bridge", "info"], {"SPARROW_LLM_TIMEOUT_S": "inf"}, "SPARROW_LLM_TIMEOUT_S must be a finite"),
    ("negative concurrency", ["bridge", "info"], {"SPARROW_LLM_CONCURRENCY": "-1"}, "SPARROW_LLM_CONCURRENCY must be >= 1"),
    ("unknown model", ["rerank", "--model", "nope", "--users", "1"], {}, "unknown model 'nope'"),
    ("missing ratings", ["profiles", "--ratings", "/nonexistent/ratings.csv", "--no-progress"], {}, "no ratings file at"),
    ("malformed base URL", ["profiles", "--no-progress"],
     {"SPARROW_LLM_BACKEND": "zhipuai", "ZHIPUAI_API_KEY": VALID_KEY, "ZHIPUAI_BASE_URL": "not a url"},
     "ZHIPUAI_BASE_URL must be an http(s) URL"),
    ("zhipuai without a key", ["profiles", "--no-progress"], {"SPARROW_LLM_BACKEND": "zhipuai"}, "ZHIPUAI_API_KEY"),
    ("unknown backend", ["profiles", "--no-progress"], {"SPARROW_LLM_BACKEND": "gpt"}, "SPARROW_LLM_BACKEND must be"),
    ("no launcher running", ["bridge", "info"], {}, "the bridge is not running"),
])
def test_cli_errors_are_one_line_and_exit_2(name, argv, env, expected, monkeypatch, tmp_path, capsys):
    for key in ("ZHIPUAI_API_KEY", "ZHIPUAI_BASE_URL", "SPARROW_LLM_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SPARROW_LLM_HOME", str(tmp_path / "home"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2, name
    line = _error_line(capsys)
    assert expected in line, line
    assert VALID_KEY not in line


def test_a_store_folder_that_is_a_file_is_one_line(monkeypatch, tmp_path, capsys):
    (tmp_path / "store").write_text("not a folder")
    monkeypatch.setenv("SPARROW_LLM_HOME", str(tmp_path))
    assert main(["rerank", "--model", "recent", "--users", "1", "--store-dir", str(tmp_path / "store")]) == 2
    assert "is a file, not a folder" in _error_line(capsys)


def test_a_data_folder_without_ratings_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SPARROW_LLM_HOME", str(tmp_path))
    monkeypatch.setenv("SPARROW_LLM_DATA_DIR", str(tmp_path / "nothing-here"))
    assert main(["profiles", "--no-progress"]) == 2
    assert "no ratings file at" in _error_line(capsys)


def test_a_wrong_token_is_one_line(host, capsys):
    monkey = host.settings.bridge.connect_file
    bad = monkey.parent / "wrong-token.json"
    data = json.loads(monkey.read_text())
    bad.write_text(json.dumps({**data, "token": "not-the-token"}))
    assert main(["bridge", "info", "--connect-file", str(bad)]) == 2
    assert "refused the token" in _error_line(capsys)


def test_a_run_whose_llm_calls_all_fail_exits_2_and_keeps_good_records(host, fake_glm, capsys, monkeypatch):
    store = open_default_store(host.settings)
    store.put_records([_good_record(1)])
    fake_glm.default = Reply(status=401)  # a wrong key: every call refused
    monkeypatch.setenv("SPARROW_LLM_HOME", str(host.settings.host.work_dir))
    monkeypatch.setenv("SPARROW_LLM_BACKEND", "zhipuai")
    monkeypatch.setenv("ZHIPUAI_API_KEY", "wrong-key-0123456789")
    monkeypatch.setenv("ZHIPUAI_BASE_URL", fake_glm.url)
    code = main(["rerank", "--model", "llm", "--users", "1,2", "--no-progress", "--store-dir",
                 str(host.settings.store_dir), "--connect-file", str(host.settings.bridge.connect_file)])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "every LLM call failed" in lines[0] and "1 good records kept" in lines[0]
    assert "wrong-key" not in err + out
    assert store.get_record("llm", 1).meta["parse"] == "ok"


# ---- store files (the Python reader) and the old default location ------------------------------

def _stored(store: FileStore, model="llm", user=1) -> Path:
    return store.root / "records" / model / f"{user}.json"


@pytest.mark.parametrize("name, make", [
    ("a FIFO", lambda p: os.mkfifo(p)),
    ("a symlink out of the store", lambda p: p.symlink_to("/etc/hostname")),
    ("larger than the limit", lambda p: p.write_text('{"model":"llm","meta":"' + "x" * (2 << 20) + '"}')),
    ("nested 200k deep", lambda p: p.write_text("[" * 200_000 + "]" * 200_000)),
    ("truncated", lambda p: p.write_text(_good_record(1).to_json()[:40])),
    ("a folder", lambda p: p.mkdir()),
])
def test_hostile_store_files_read_as_missing(store, name, make):
    path = _stored(store)
    path.parent.mkdir(parents=True)
    make(path)
    started = time.monotonic()
    assert store.get_record("llm", 1) is None, name
    assert time.monotonic() - started < 2.0


def test_records_at_the_old_default_are_moved_once_with_a_warning(tmp_path, caplog):
    legacy, store_dir = tmp_path / "webroot" / "modeldata" / "sparrow-llm", tmp_path / "store"
    FileStore(legacy).put_records([_good_record(1), _good_record(2)])
    FileStore(store_dir).put_records([dataclasses.replace(_good_record(2), items=(RankedItem(9, 1.0, "newer"),))])
    (legacy / "records" / "llm" / "3.json").symlink_to("/etc/hostname")  # never followed, never moved
    assert adopt_legacy_store(legacy, store_dir) == 1
    assert "moved 1 store files" in caplog.text
    # Nothing deleted: the link and the older copy of record 2 stay (tests/test_faults_deploy.py has the rest).
    assert sorted(str(p.relative_to(legacy)) for p in legacy.rglob("*.json")) == ["records/llm/2.json", "records/llm/3.json"]
    moved = FileStore(store_dir)
    assert moved.get_record("llm", 1).movie_ids == [8] and moved.get_record("llm", 2).movie_ids == [9]
    assert adopt_legacy_store(legacy, store_dir) == 0  # once


def test_the_default_store_is_outside_any_web_root(tmp_path):
    settings = Settings().replace(host={"work_dir": tmp_path / "home"})
    assert settings.store_dir == tmp_path / "home" / "store"
    assert "modeldata" not in str(settings.store_dir)


# ---- Redis (the Python writer) ------------------------------------------------------------------

def test_redis_killed_is_a_store_error_and_a_restart_recovers(tmp_path):
    server = start_redis()
    store = open_store(StoreSettings(kind="redis", redis_port=server.port))
    store.put_records([_good_record(1)])
    port = server.port
    server.proc.kill()
    server.proc.wait()
    with pytest.raises(StoreUnavailable, match="not reachable"):
        store.put_records([_good_record(2)])
    server = start_redis(port)
    try:
        store.put_records([_good_record(3)])  # the pooled connection was dead: a fresh one, no error
        assert store.get_record("llm", 3).movie_ids == [8]
    finally:
        server.stop()


# ---- the host JVM -------------------------------------------------------------------------------

def test_the_host_jvm_gets_no_llm_key_and_dies_with_its_parent(built_bridge, tmp_path):
    settings = host_settings(tmp_path)
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from sparrow_llm.bridge.host import HostProcess
        from sparrow_llm.config import Settings
        settings = Settings().replace(host={{"work_dir": Path({str(tmp_path)!r}), "http_port": {settings.host.http_port},
                                             "shared_dir": Path({str(SHARED)!r})}},
                                      bridge={{"connect_file": Path({str(settings.bridge.connect_file)!r})}},
                                      store={{"dir": Path({str(tmp_path / 'store')!r})}})
        host = HostProcess(settings).start()
        print(host.pid, flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "ZHIPUAI_API_KEY": "sk-should-never-reach-the-jvm"}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        jvm = int(parent.stdout.readline())
        assert b"ZHIPUAI_API_KEY" not in Path(f"/proc/{jvm}/environ").read_bytes()
        parent.send_signal(signal.SIGKILL)  # no cleanup runs in the parent
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _running(jvm):
            time.sleep(0.2)
        assert not _running(jvm), "the host JVM outlived its parent"
    finally:
        parent.kill()


def _running(pid: int) -> bool:
    try:  # a zombie (exited, not yet reaped by its new parent) is not running
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_the_breaker_reports_unavailable_not_a_crash(fake_glm, glm_settings):
    fake_glm.default = Reply(status=503)
    backend = make_backend(dataclasses.replace(glm_settings, max_retries=0, breaker_failures=1))
    with pytest.raises(LLMUnavailable):
        backend.complete([{"role": "user", "content": "x"}], max_tokens=4, temperature=0.0)
    with pytest.raises(LLMUnavailable, match="circuit breaker open"):
        backend.complete([{"role": "user", "content": "x"}], max_tokens=4, temperature=0.0)
