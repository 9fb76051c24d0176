"""Safe on a real deploy, round 2 (issue 18): nothing private over HTTP (1), the legacy move deletes nothing (2),
a NaN rating is not fatal (3), a model that cannot load fails once in one line (4), checkpoints are verified
before reuse (5), LLM answers are cached by the model's content (6), settings mean what they say (7), exits a
supervisor can act on (8), error lines name the file and the cause (9), killed runs leave nothing behind and
EASE's memory is checked up front (10). Real parts: the built bridge, the stand-in host JVM, the real models,
the CLI as a process where its stderr is what is asserted. The Java halves are JUnit: HostStaticServletTest,
ConnectFileTest, BridgeConfigTest, JsonTest, LauncherIT."""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from sparrow_llm.bridge.client import BridgeClient, BridgeTimeout, BridgeUnavailable
from sparrow_llm.bridge.host import HostError, HostProcess, http_get
from sparrow_llm.cli import main
from sparrow_llm.config import REPO_ROOT, ConfigError, LLMSettings, Settings
from sparrow_llm.datafolder import data_key
from sparrow_llm.domain import RankedItem, Record
from sparrow_llm.evaluation.datacopy import write_eval_copy
from sparrow_llm.meter import measure
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.rankers.clickprompt import checkpoint as cp_checkpoint
from sparrow_llm.rankers.llm import local_lm
from sparrow_llm.rankers.llm.base import PromptRequest, make_backend
from sparrow_llm.rankers.llm.local_lm import converted_model, model_source
from sparrow_llm.rankers.clickprompt import tuning as cp_tuning
from sparrow_llm.rankers.ltr import train as ltr_train
from sparrow_llm.registry import make_base
from sparrow_llm.rankers.palr import checkpoint as palr_checkpoint
from sparrow_llm.rankers.palr.prompts import Prompts
from sparrow_llm.rankers.palr.ranker import cache_key
from sparrow_llm.rankers.retrieval import checkpoint as retrieval_checkpoint
from sparrow_llm.rankers.retrieval.linear import EASE_BYTES_PER_CELL, LinearModel, available_memory
from sparrow_llm.spark import read_movies, session
from sparrow_llm.store import FileStore, adopt_legacy_store

from tests.conftest import FIXTURE_WEBROOT, SHARED, free_port
from tests.rankers.ltr.test_train import OPTIONS as LTR_OPTIONS, small  # noqa: F401 (a fixture)
from tests.rankers.retrieval.conftest import tiny_ratings, tiny_settings, write_folder  # noqa: F401 (a fixture)

NAN_LINE = "1,1,NaN,964982703"  # user 1's rating of movie 1 (Toy Story, loaded by the host), as a hostile file has it


def _private_settings(home: Path, **host) -> Settings:
    """A host of our own with the plugin's defaults: connect file and log in `<home>/private`."""
    return Settings().replace(host={"work_dir": home, "http_port": free_port(), "shared_dir": SHARED, **host},
                              bridge={"connect_file": home / "private" / "gateway.json"}, store={"dir": home / "store"})


def _cli(env: dict[str, str], *argv: str, **kwargs) -> subprocess.Popen:
    """`sparrow-llm ...` as a process, with this worktree's package first on its path."""
    full = {**{k: v for k, v in os.environ.items() if not k.startswith(("SPARROW_LLM_", "ZHIPUAI_"))},
            "PYTHONPATH": str(REPO_ROOT), **env}
    return subprocess.Popen([sys.executable, "-m", "sparrow_llm.cli", *argv], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _data_folder(root: Path, ratings: str) -> Path:
    """A host-layout data folder: the fixture's files linked, `ratings` as its ratings.csv."""
    (root / "sampledata").mkdir(parents=True)
    (root / "modeldata").mkdir()
    for name in ("movies.csv", "links.csv"):
        (root / "sampledata" / name).symlink_to(FIXTURE_WEBROOT / "sampledata" / name)
    for name in ("item2vecEmb.csv", "userEmb.csv"):
        (root / "modeldata" / name).symlink_to(FIXTURE_WEBROOT / "modeldata" / name)
    (root / "posters").symlink_to(FIXTURE_WEBROOT / "posters")
    (root / "sampledata" / "ratings.csv").write_text(ratings)
    return root


def _with_line(replacement: str) -> str:
    """The fixture's ratings with user 1's rating of movie 1 replaced."""
    text = (FIXTURE_WEBROOT / "sampledata" / "ratings.csv").read_text()
    assert "\n1,1,4.0,964982703\n" in text
    return text.replace("\n1,1,4.0,964982703\n", f"\n{replacement}\n", 1)


# ---- case 1: nothing private over HTTP -----------------------------------------------------------

def _fake_checkout(root: Path) -> Path:
    """A SparrowRecSys checkout as `SPARROW_HOME` names one (never started here: the refusal comes first)."""
    webroot = root / "target" / "classes" / "webroot"
    (webroot / "modeldata").mkdir(parents=True)
    (webroot / "index.html").write_text("<title>host</title>")
    (root / "target" / "SparrowRecSys-1.0-SNAPSHOT-jar-with-dependencies.jar").write_bytes(b"")
    return webroot


@pytest.mark.parametrize("through_a_link", [False, True])
def test_1_a_plugin_home_inside_the_web_root_is_refused_before_the_jvm(built_bridge, tmp_path, monkeypatch, capsys,
                                                                      through_a_link):
    webroot = _fake_checkout(tmp_path / "SparrowRecSys")
    home = webroot / "modeldata" / "llmhome"
    if through_a_link:  # a home that looks outside but a link puts inside
        (tmp_path / "elsewhere").symlink_to(webroot / "modeldata")
        home = tmp_path / "elsewhere" / "llmhome"
    monkeypatch.setenv("SPARROW_HOME", str(tmp_path / "SparrowRecSys"))
    monkeypatch.setenv("SPARROW_LLM_HOME", str(home))
    monkeypatch.setenv("PORT", str(free_port()))
    assert main(["bridge", "start"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sparrow-llm: error: SPARROW_LLM_HOME {home} is inside the host's web root {webroot}, which the "
                   "host serves to anyone (the connect file holds the gateway token): move it outside"]
    assert not (webroot / "modeldata" / "llmhome" / "private").exists()  # no connect file, no log, no JVM


def test_1_the_connect_file_and_the_log_are_private_and_never_served(built_bridge, tmp_path):
    home = tmp_path / "home"
    with HostProcess(_private_settings(home)) as host:
        private = home / "private"
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        assert stat.S_IMODE((private / "gateway.json").stat().st_mode) == 0o600
        assert host.log_path == private / "host.log" and host.log_path.is_file()
        token = json.loads((private / "gateway.json").read_text())["token"]
        # The stand-in's web root is composed under the home: served; a link in it to the home is not.
        webroot = host.runtime.webroot
        (webroot / "llm-home").symlink_to(home)
        (webroot / "token.json").symlink_to(private / "gateway.json")
        for path in ("/llm-home/", "/llm-home/private/", "/llm-home/private/gateway.json", "/llm-home/private/host.log",
                     "/token.json", "/llm-home/store/"):
            status, body = _get(host.base_url + path)
            assert status == 404, path
            assert token not in body and "Directory: " not in body, path
        assert _get(host.base_url + "/index.html")[0] == 200
        assert _get(host.base_url + "/getrecforyou?id=1&size=3&model=emb")[0] == 200


# ---- case 2: the legacy-folder move deletes nothing ----------------------------------------------

def _record(model: str, user_id: int, movie_id: int = 8) -> Record:
    return Record(model, user_id, (RankedItem(movie_id, 1.0, "r"),), "test", "v1", meta={})


def test_2_the_legacy_move_moves_only_plugin_records_and_deletes_nothing(tmp_path, caplog):
    legacy, store_dir = tmp_path / "webroot" / "modeldata" / "sparrow-llm", tmp_path / "store"
    FileStore(legacy).put_records([_record("llm", 1), _record("recent", 2)])
    operator = {
        "notes.txt": "the operator's notes",
        "config.json": '{"mine": true}',  # JSON, but not at a record's place
        "records/llm/7.json": _record("llm", 8).to_json(),  # another user's record under 7: not what the path says
        "records/llm/draft.json": "{}",
        "profiles/3.json": '{"userId": 3}',  # not a profile
    }
    for rel, text in operator.items():
        (legacy / rel).parent.mkdir(parents=True, exist_ok=True)
        (legacy / rel).write_text(text)
    with caplog.at_level(logging.WARNING, logger="sparrow_llm.store"):
        assert adopt_legacy_store(legacy, store_dir) == 2
    assert FileStore(store_dir).get_record("llm", 1).movie_ids == [8]
    assert FileStore(store_dir).get_record("recent", 2).movie_ids == [8]
    left = {str(p.relative_to(legacy)): p.read_text() for p in legacy.rglob("*") if p.is_file()}
    assert left == operator  # every other file where it was, as it was
    assert not (legacy / "records" / "recent").exists()  # a folder the move emptied is removed (os.rmdir)
    assert "left 5 files" in caplog.text
    # Once the operator takes their files out, the next run removes the empty folders, legacy included.
    for rel in operator:
        (legacy / rel).unlink()
    assert adopt_legacy_store(legacy, store_dir) == 0
    assert not legacy.exists() and (tmp_path / "webroot" / "modeldata").is_dir()


# ---- case 3: a NaN rating is not fatal -----------------------------------------------------------

@pytest.fixture(scope="module")
def nan_host(built_bridge, tmp_path_factory):
    """The stand-in host over a data folder with one literal NaN rating (the host loads it)."""
    root = tmp_path_factory.mktemp("nan")
    data = _data_folder(root / "data", _with_line(NAN_LINE))
    with HostProcess(_private_settings(root / "home", data_dir=data)) as host:
        yield host


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"a non-JSON number in the answer: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_3_a_nan_rating_does_not_stop_rerank(nan_host, monkeypatch, capsys):
    settings = nan_host.settings
    monkeypatch.setenv("SPARROW_LLM_HOME", str(settings.host.work_dir))
    monkeypatch.setenv("SPARROW_LLM_DATA_DIR", str(settings.host.data_dir))
    code = main(["rerank", "--model", "popularity", "--users", "1,3", "--no-progress", "--store-dir",
                 str(settings.store_dir), "--connect-file", str(settings.bridge.connect_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    store = FileStore(settings.store_dir)
    assert store.get_record("popularity", 1).items and store.get_record("popularity", 3).items
    with BridgeClient(settings.bridge) as client:
        history = client.history(1)
        assert history.known and 1 not in {r.movie_id for r in history.ratings}  # the NaN row, dropped
        rated = sum(1 for line in (FIXTURE_WEBROOT / "sampledata" / "ratings.csv").open() if line.startswith("1,"))
        assert len(history.ratings) == rated - 1  # every other rating of the user kept
        movies, missing = client.movies([1, 2])
        assert missing == [] and movies[1].average_rating == 0.0 and movies[2].average_rating > 0


def test_3_the_compare_page_writes_no_bare_nan(nan_host):
    status, body = _get(nan_host.base_url + "/sparrow-llm/api/compare?id=1&size=800")
    assert status == 200
    answer = _strict_json(body)
    toy_story = [m for m in answer["host"]["movies"] if m["movieId"] == 1]
    assert len(toy_story) == 1 and toy_story[0]["averageRating"] is None


def test_3_the_eval_copy_keeps_the_nan_the_host_loads(built_bridge, tmp_path):
    source = _data_folder(tmp_path / "source", _with_line(NAN_LINE))
    dest = tmp_path / "copy"
    write_eval_copy(source, dest)
    lines = (dest / "sampledata" / "ratings.csv").read_text().splitlines()
    assert NAN_LINE in lines and not [line for line in lines if ",," in line or line.endswith(",")]
    with HostProcess(_private_settings(tmp_path / "home", data_dir=dest)) as host, \
            BridgeClient(host.settings.bridge) as client:
        assert client.history(1).known and client.info()["movies"] == 755


def test_3_a_host_that_dies_at_start_names_the_cause_in_its_one_line(built_bridge, tmp_path, monkeypatch, capsys):
    data = _data_folder(tmp_path / "data", _with_line("1,1,,964982703"))  # what the old eval copy wrote
    monkeypatch.setenv("SPARROW_LLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPARROW_LLM_DATA_DIR", str(data))
    monkeypatch.setenv("PORT", str(free_port()))
    assert main(["bridge", "start"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sparrow-llm: error: the host JVM (pid ") and " exited with code " in err[0]
    assert " while starting; last lines of " in err[0] and "NumberFormatException" in err[0]
    assert "\tat " not in err[0] and " | at " not in err[0]  # the cause, not the stack frames


# ---- case 8: exits a supervisor can act on -------------------------------------------------------

def test_8_bridge_start_fails_with_one_line_when_its_jvm_is_killed(built_bridge, tmp_path):
    home = tmp_path / "home"
    connect = home / "private" / "gateway.json"
    proc = _cli({"SPARROW_LLM_HOME": str(home), "PORT": str(free_port()), "SPARROW_LLM_SHARED": str(SHARED),
                 "PYTHONUNBUFFERED": "1"}, "bridge", "start")
    watchdog = threading.Timer(120, proc.kill)  # a hang fails the test instead of blocking the read below
    watchdog.start()
    try:
        ready = proc.stdout.readline()  # printed once the host is up
        assert ready.startswith("host (standin) at http://127.0.0.1:"), ready + proc.communicate()[1]
        jvm = json.loads(connect.read_text())["pid"]
        os.kill(jvm, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"sparrow-llm: error: the host JVM (pid {jvm}) was killed by SIGKILL while serving; "
                          f"last lines of {home / 'private' / 'host.log'}: ")
    assert not connect.exists()  # the dead JVM's connect file is gone


def test_8_serve_waits_for_a_launcher_restart_and_reconnects(built_bridge, tmp_path):
    settings = _private_settings(tmp_path / "home")
    extra = {"SPARROW_LLM_NEARLINE_MODELS": "recent"}
    first = HostProcess(settings, extra_env=extra).start()
    serve = _cli({"SPARROW_LLM_HOME": str(settings.host.work_dir), "SPARROW_LLM_STORE_DIR": str(settings.store_dir),
                  "SPARROW_LLM_NEARLINE_POLL_S": "0.2"}, "serve", "--model", "recent")
    def ranked(host: HostProcess, user_id: int) -> None:
        """A page visit of `user_id` (a miss, queued) is ranked by the worker."""
        assert _get(f"{host.base_url}/getrecforyou?id={user_id}&size=5&model=recent")[0] == 200
        deadline = time.monotonic() + 90
        while FileStore(settings.store_dir).get_record("recent", user_id) is None:
            assert serve.poll() is None and time.monotonic() < deadline, "the worker did not rank the miss"
            time.sleep(0.5)

    try:
        ranked(first, 4)  # the worker is up and connected
        first.stop()  # the launcher restarts: its gateway and connect file go away for a while
        time.sleep(7)
        assert serve.poll() is None, serve.communicate()
        with HostProcess(settings, extra_env=extra) as second:
            ranked(second, 5)
            serve.send_signal(signal.SIGTERM)
            out, err = serve.communicate(timeout=30)
    finally:
        first.stop()
        serve.kill()
    assert serve.returncode == 0, err
    assert "Traceback" not in err and "py4j" not in err, err
    lines = err.strip().splitlines()
    outage = [line for line in lines if "retrying in" in line]
    assert len(outage) == 1 and " WARNING " in outage[0] and "(backoff up to 30 s)" in outage[0], err  # one line
    assert len(lines) == 2 and lines[1].endswith("nearline: the bridge answers again; reconnected"), err
    assert "2 ranked" in out.splitlines()[-1]


def test_8_a_jvm_killed_under_a_rerank_gives_one_line_and_no_py4j_traceback(built_bridge, tmp_path, caplog):
    settings = _private_settings(tmp_path / "home")
    host = HostProcess(settings).start()
    try:
        with BridgeClient(settings.bridge) as client:
            assert client.info()["movies"] == 755  # connected, a call made
            host.kill()  # as a crash would: the connect file stays behind
            with caplog.at_level(logging.DEBUG), \
                    pytest.raises(BridgeUnavailable, match="no sparrow-llm bridge answers"):
                client.info()
        assert not [r for r in caplog.records if r.name.startswith("py4j")]
        proc = _cli({"SPARROW_LLM_HOME": str(settings.host.work_dir), "SPARROW_LLM_STORE_DIR": str(settings.store_dir)},
                    "rerank", "--model", "recent", "--users", "1", "--no-progress")
        out, err = proc.communicate(timeout=120)
    finally:
        host.stop()
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparrow-llm: error: no sparrow-llm bridge answers at "), err


# ---- case 4: a model that fails to load fails once, in one line ----------------------------------

def _head(path: Path, size: int, of: Path | None = None) -> Path:
    """`path` holding the first `size` bytes of `of` (the real GGUF): its header is right, the file is cut."""
    with open(of or model_source(None), "rb") as f:
        path.write_bytes(f.read(size))
    return path


@pytest.mark.parametrize("content", [b"this is a text file\n", b""])
def test_4_a_file_named_gguf_that_is_not_one_is_one_line(tmp_path, content):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        make_backend(LLMSettings(local_model=fake, models_dir=tmp_path / "models"))
    assert str(raised.value) == (f"SPARROW_LLM_LOCAL_MODEL {fake} is not a GGUF file (it starts with "
                                 f"{content[:4]!r}, not b'GGUF')")
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("kind", ["truncated gguf", "folder with only config.json"])
def test_4_a_model_that_cannot_load_is_one_error_tried_once_per_process(tmp_path, kind):
    if kind == "truncated gguf":
        source = _head(tmp_path / "cut.gguf", 2_000_000)
    else:
        source = tmp_path / "folder"
        source.mkdir()
        shutil.copyfile(converted_model(model_source(None), LLMSettings.models_dir) / "config.json",
                        source / "config.json")
    backend = make_backend(LLMSettings(local_model=source, models_dir=tmp_path / "models", local_threads=1))
    with pytest.raises(ConfigError) as first:
        backend.loaded()
    message = str(first.value)
    assert message.startswith(f"the local model {source} cannot be loaded (") and "\n" not in message
    started = time.perf_counter()
    for _ in range(3):  # every later batch, poll or backend: the same line at once, never a second load
        with pytest.raises(ConfigError) as again:
            make_backend(backend.settings).loaded()
        assert str(again.value) == message
    assert time.perf_counter() - started < 0.5
    assert not list((tmp_path / "models").glob("*"))  # no conversion kept of what failed


def test_4_a_rerank_over_a_bad_model_is_one_line_not_one_traceback_per_batch(host, tmp_path):
    cut = _head(tmp_path / "cut.gguf", 2_000_000)
    settings = host.settings
    proc = _cli({"SPARROW_LLM_LOCAL_MODEL": str(cut), "SPARROW_LLM_MODELS_DIR": str(tmp_path / "models"),
                 "SPARROW_LLM_BASE": "host", "SPARROW_LLM_FUSION_WEIGHT": "0.5", "SPARROW_LLM_SHARED": str(SHARED)},
                "rerank", "--model", "llm", "--no-progress", "--store-dir", str(tmp_path / "store"),
                "--connect-file", str(settings.bridge.connect_file))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err  # not one traceback per 64-user batch
    assert err.startswith(f"sparrow-llm: error: the local model {cut} cannot be loaded (") and "Traceback" not in err
    assert not (tmp_path / "store" / "records").exists() or not list((tmp_path / "store" / "records").rglob("*.json"))


def test_4_serve_over_a_file_named_gguf_that_is_not_one_is_one_line_before_polling(host, tmp_path):
    """The real `serve` command: the model is checked once, when the worker starts, not per poll."""
    fake = tmp_path / "model.gguf"
    fake.write_text("this is a text file\n")
    settings = host.settings
    started = time.monotonic()
    proc = _cli({"SPARROW_LLM_LOCAL_MODEL": str(fake), "SPARROW_LLM_MODELS_DIR": str(tmp_path / "models"),
                 "SPARROW_LLM_BASE": "host", "SPARROW_LLM_NEARLINE_POLL_S": "0.2", "SPARROW_LLM_SHARED": str(SHARED)},
                "serve", "--model", "llm", "--store-dir", str(tmp_path / "store"),
                "--connect-file", str(settings.bridge.connect_file))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert err.splitlines() == [f"sparrow-llm: error: SPARROW_LLM_LOCAL_MODEL {fake} is not a GGUF file (it starts "
                                "with b'this', not b'GGUF')"], err
    assert time.monotonic() - started < 20 and "polls" not in out  # refused before the first poll
    assert not (tmp_path / "models").exists()


def test_4_an_unwritable_models_folder_is_one_line(tmp_path):
    cut = _head(tmp_path / "cut.gguf", 2_000_000)
    in_the_way = tmp_path / "models"
    in_the_way.write_text("a file where the folder should be")
    backend = make_backend(LLMSettings(local_model=cut, models_dir=in_the_way))
    with pytest.raises(ConfigError) as raised:
        backend.loaded()
    assert str(raised.value) == (f"SPARROW_LLM_MODELS_DIR {in_the_way}: cannot make the folder the dequantised "
                                 "model is kept in (File exists)")


def _dequantised(tmp_path: Path) -> tuple[Path, Path]:
    """A models folder of our own whose conversion of the default model is a copy of the real one's files."""
    source = model_source(None)
    real = converted_model(source, LLMSettings.models_dir)
    target = tmp_path / "models" / real.name
    target.mkdir(parents=True)
    for entry in real.iterdir():
        (target / entry.name).symlink_to(entry)
    return source, target


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "no config.json"])
def test_4_a_damaged_dequantised_folder_is_not_taken_for_a_model(tmp_path, damage):
    source, target = _dequantised(tmp_path)
    assert local_lm._dequantised_problem(target) is None
    weights = target / "model.safetensors"
    if damage == "no config.json":
        (target / "config.json").unlink()
        expected = f"{target / 'config.json'} is missing"
    else:
        real = weights.resolve()
        weights.unlink()
        _head(weights, 100_000 if damage == "truncated" else 0, real)
        cause = "incomplete metadata, file not fully covered" if damage == "truncated" else "header too small"
        expected = f"{weights}: Error while deserializing header: {cause}"
    assert local_lm._dequantised_problem(target) == expected


def test_4_a_dequantised_folder_without_config_json_is_converted_again(tmp_path, caplog):
    """The real dequantisation (about a minute): the damaged folder is replaced whole, no "Directory not empty"."""
    source, target = _dequantised(tmp_path)
    (target / "config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="sparrow_llm.rankers.llm.local_lm"):
        assert converted_model(source, tmp_path / "models") == target
    assert [r.getMessage() for r in caplog.records] == [
        f"local model: dequantising {source} again: {target / 'config.json'} is missing"]
    assert local_lm._dequantised_problem(target) is None and not (target / "model.safetensors").is_symlink()
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # nothing left beside it


def test_4_a_zero_byte_adapter_falls_back_to_zero_shot_with_one_warning(tmp_path, caplog):
    settings = Settings().replace(host={"data_dir": FIXTURE_WEBROOT, "work_dir": tmp_path},
                                  llm={"models_dir": tmp_path / "models", "fusion_weight": 0.5})
    llm = make_backend(settings.llm)
    prompts = Prompts.from_settings(settings.llm)
    adapter = palr_checkpoint.checkpoint_dir(settings, llm, prompts, "host") / palr_checkpoint.ADAPTER
    adapter.mkdir(parents=True)
    (adapter / palr_checkpoint.ADAPTER_CONFIG).write_text("{}")
    (adapter / palr_checkpoint.ADAPTER_WEIGHTS).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="sparrow_llm.rankers.palr.checkpoint"):
        serving = palr_checkpoint.serving_model(settings, llm, prompts, "host")
    assert serving.variant == palr_checkpoint.ZERO_SHOT and serving.llm is llm and serving.llm.adapter is None
    assert [r.getMessage() for r in caplog.records] == [
        f"the fine-tuned adapter cannot be used ({adapter / palr_checkpoint.ADAPTER_WEIGHTS}: Error while "
        "deserializing header: header too small): serving the zero-shot model"]


# ---- case 5: checkpoints verified before reuse ----------------------------------------------------

def _damage(folder: Path, damage: str) -> str:
    """Damages a checkpoint folder as a crash or an operator would; the cause its warning names."""
    if damage == "zero-byte weights":
        (folder / "model.safetensors").write_bytes(b"")
        return f"{folder / 'model.safetensors'}: Error while deserializing header: header too small"
    if damage == "truncated weights":
        with open(folder / "model.safetensors", "r+b") as f:
            f.truncate(f.seek(0, 2) - 8)
        return (f"{folder / 'model.safetensors'}: Error while deserializing header: incomplete metadata, "
                "file not fully covered")
    if damage == "torn config.json":
        text = (folder / "config.json").read_text()
        (folder / "config.json").write_text(text[: len(text) // 2])
        return f"{folder / 'config.json'}: not valid JSON ("
    assert damage == "deleted training.json"
    (folder / "training.json").unlink()
    return f"{folder / 'training.json'} is missing"


@pytest.mark.parametrize("damage", ["zero-byte weights", "truncated weights", "torn config.json",
                                    "deleted training.json"])
def test_5_a_damaged_retrieval_checkpoint_is_retrained_never_reused(tiny_settings, caplog, damage):
    first = retrieval_checkpoint.prepare(tiny_settings, False, model="popularity")
    folder = retrieval_checkpoint.model_dir(tiny_settings, "popularity")
    assert first.startswith(f"popularity: trained {folder} ")
    cause = _damage(folder, damage)
    with caplog.at_level(logging.WARNING, logger="sparrow_llm.rankers.retrieval.checkpoint"):
        line = retrieval_checkpoint.prepare(tiny_settings, False, model="popularity")
    assert line.startswith(f"popularity: trained {folder} ")  # not "reusing"
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(f"retrieval: retraining popularity: {cause}")
    assert retrieval_checkpoint.is_checkpoint(folder) and LinearModel.from_pretrained(folder).weights.size
    assert sorted(p.name for p in folder.parent.iterdir()) == ["popularity"]  # replaced whole, nothing left
    assert retrieval_checkpoint.prepare(tiny_settings, False, model="popularity").startswith("popularity: reusing ")


def test_5_a_checkpoint_of_other_data_copied_under_this_datas_key_is_retrained(tiny_settings, tmp_path, caplog):
    other = tiny_settings.replace(host={"data_dir": write_folder(tmp_path / "other", tiny_ratings().iloc[:-3])})
    foreign, _ = retrieval_checkpoint.prepare_model(other, "popularity", progress=False)
    mine = retrieval_checkpoint.model_dir(tiny_settings, "popularity")
    shutil.copytree(foreign, mine)
    foreign_key, my_key = data_key(other.host.data_webroot), data_key(tiny_settings.host.data_webroot)
    with caplog.at_level(logging.WARNING, logger="sparrow_llm.rankers.retrieval.checkpoint"):
        assert retrieval_checkpoint.prepare_model(tiny_settings, "popularity", progress=False) == (mine, True)
    assert [r.getMessage() for r in caplog.records] == [
        f"retrieval: retraining popularity: {mine / 'training.json'} records the data key {foreign_key}, not this "
        f"data folder's {my_key} (a checkpoint of other data)"]
    assert retrieval_checkpoint.training_info(mine)["data_key"] == my_key


@pytest.fixture()
def clickprompt_checkpoint(tmp_path_factory, monkeypatch):
    """A ClickPrompt checkpoint of a tiny recipe (CTR from scratch, one short epoch) for a 12-user folder."""
    ratings = pd.read_csv(FIXTURE_WEBROOT / "sampledata" / "ratings.csv")
    root = tmp_path_factory.mktemp("cp")
    (root / "data" / "sampledata").mkdir(parents=True)
    ratings[ratings["userId"] <= 12].to_csv(root / "data" / "sampledata" / "ratings.csv", index=False)
    shutil.copyfile(FIXTURE_WEBROOT / "sampledata" / "movies.csv", root / "data" / "sampledata" / "movies.csv")
    # No base: the step trains the checkpoint and chooses no fusion weight over a base.
    settings = Settings().replace(host={"data_dir": root / "data", "work_dir": root / "work"}, base=None)
    monkeypatch.setitem(cp_checkpoint.RECIPES, True, cp_checkpoint.Recipe("tiny", 0, None, finetune_epochs=1,
                                                                           eval_every=20, patience=1))
    line = cp_tuning.prepare(settings, False, make_base)
    folder = cp_checkpoint.default_checkpoint(settings)
    assert line.startswith(f"clickprompt: trained {folder} ")
    return settings, folder


@pytest.mark.parametrize("damage", ["zero-byte weights", "torn config.json", "deleted training.json"])
def test_5_a_damaged_clickprompt_checkpoint_is_refused_in_one_line_and_retrained(clickprompt_checkpoint, caplog,
                                                                                  damage):
    settings, folder = clickprompt_checkpoint
    cause = _damage(folder, damage)
    with pytest.raises(ConfigError) as raised:  # the ranker never loads it (no SafetensorError without a path)
        cp_checkpoint.serving_checkpoint(settings)
    assert str(raised.value).startswith(f"the ClickPrompt checkpoint {folder} cannot be used: {cause}")
    assert str(raised.value).endswith("; train it again with `sparrow-llm clickprompt prepare`")
    with caplog.at_level(logging.WARNING, logger="sparrow_llm.rankers.clickprompt.checkpoint"):
        line = cp_tuning.prepare(settings, False, make_base)
    assert line.startswith(f"clickprompt: trained {folder} ")  # not "reusing"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING][0].startswith(
        f"clickprompt: retraining: {cause}")
    assert cp_checkpoint.serving_checkpoint(settings) == folder
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_5_a_clickprompt_checkpoint_of_other_data_is_not_served(clickprompt_checkpoint):
    settings, folder = clickprompt_checkpoint
    info = json.loads((folder / "training.json").read_text())
    info["data_key"] = "0123456789abcdef"
    (folder / "training.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=f"cannot be used: {folder / 'training.json'} records the data key "
                                          "0123456789abcdef, not this data folder's "):
        cp_checkpoint.serving_checkpoint(settings)


def test_5_a_learned_stage_model_without_training_json_is_retrained_cleanly(small, spark, caplog):
    directory, _ = ltr_train.train_model(small, llm=False, options=LTR_OPTIONS, progress=False)
    (directory / ltr_train.TRAINING_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="sparrow_llm.rankers.ltr.train"):
        assert ltr_train.train_model(small, llm=False, options=LTR_OPTIONS, progress=False) == (directory, True)
    assert [r.getMessage() for r in caplog.records] == [
        f"ltr: retraining: {directory / ltr_train.TRAINING_FILE} is missing"]
    assert ltr_train.is_model(directory) and not [p for p in directory.parent.iterdir() if p.name.startswith(".")]


# ---- case 6: LLM scores cached by the model's content ---------------------------------------------

def test_6_llm_answers_are_cached_by_the_models_content_not_its_file_name(tmp_path):
    real = model_source(None)
    same, changed = tmp_path / "same" / real.name, tmp_path / "changed" / real.name
    same.parent.mkdir()
    changed.parent.mkdir()
    os.link(real, same) if os.stat(real).st_dev == os.stat(tmp_path).st_dev else shutil.copyfile(real, same)
    _head(changed, real.stat().st_size - 1)  # the same name, other content
    request = PromptRequest("choose", "v1", ({"role": "user", "content": "Pick one: A or B."},), 1, (), options=("A", "B"))
    keys = {path: cache_key(make_backend(LLMSettings(local_model=path)), request) for path in (real, same, changed)}
    assert len({make_backend(LLMSettings(local_model=p)).name for p in keys}) == 1  # one name
    assert keys[real] == keys[same] != keys[changed]


# ---- case 7: every setting means what it says -----------------------------------------------------

def test_7_recent_as_the_base_ranks_and_the_records_carry_their_base(host, tmp_path):
    settings = host.settings.replace(base="recent", base_k=5, llm={"backend": "local-minilm"},
                                     store={"dir": tmp_path / "store"})
    summary = run_rerank(settings, "llm", users=[1, 2, 3], progress=False)
    assert summary.written == 3, summary.line()
    for user_id in (1, 2, 3):
        record = FileStore(tmp_path / "store").get_record("llm", user_id)
        assert record.meta["base"] == "recent" and record.meta["reranked"] == 5  # recent ranked: the window is full
        assert record.meta["base_seeds"]  # the base's own meta: the recent movies it read


def test_7_a_base_that_cannot_work_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARROW_LLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPARROW_LLM_BASE", "clickprompt")
    assert main(["rerank", "--model", "llm", "--users", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "sparrow-llm: error: SPARROW_LLM_BASE='clickprompt' is not a ranker a reranker can rerank; use one of "), err


# ---- case 9: error lines that name the file and the cause -----------------------------------------

def test_9_a_torn_calibration_model_config_or_feature_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "fusion-zero-shot.json").write_text('{"weight": 0.5,\n')
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'fusion-zero-shot.json'}: not valid JSON (")):
        palr_checkpoint.load_calibration(tmp_path, palr_checkpoint.ZERO_SHOT)
    (tmp_path / "config.json").write_text('{"kind": "ease",\n')
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'config.json'}: not valid JSON (Expecting")):
        LinearModel.from_pretrained(tmp_path)
    from sparrow_llm.rankers.clickprompt.features import FeatureSpace

    (tmp_path / "features.json").write_text("")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'features.json'}: not valid JSON (Expecting value: "
                                                    "line 1 column 1 (char 0))")):
        FeatureSpace.load(tmp_path / "features.json")


def test_9_a_fusion_weight_out_of_range_names_the_file_and_the_range(tmp_path):
    path = tmp_path / "fusion-finetuned.json"
    path.write_text(json.dumps({"weight": 7, "samples": 100, "ndcg_by_weight": {"0.0": 0.1, "1.0": 0.2}}))
    with pytest.raises(ConfigError) as raised:
        palr_checkpoint.load_calibration(tmp_path, palr_checkpoint.FINETUNED)
    assert str(raised.value) == f"{path}: fusion weight must be in [0, 1], got 7"


@pytest.mark.parametrize("ratings, cause", [
    ("", "the file is empty (not even a header line)"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247,oops\n",
     "not a valid CSV file (Expected 4 fields in line 3, saw 5)"),
])
def test_9_a_bad_ratings_csv_is_one_line_naming_the_file_and_the_line(tmp_path, monkeypatch, capsys, ratings, cause):
    data = _data_folder(tmp_path / "data", ratings)
    monkeypatch.setenv("SPARROW_LLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPARROW_LLM_DATA_DIR", str(data))
    assert main(["retrieval", "prepare", "--models", "popularity", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"sparrow-llm: error: {data / 'sampledata' / 'ratings.csv'}: {cause}"]


_RATINGS_HEADER = "userId,movieId,rating,timestamp\n"


@pytest.mark.parametrize("ratings, cause", [
    ("", "the file is empty (not even a header line)"),
    (_RATINGS_HEADER + "1,1,4.0,964982703\n1,3,4.0,964981247,oops\n",
     "not a valid CSV file (line 3 does not have the header's fields: '1,3,4.0,964981247,oops')"),
    (_RATINGS_HEADER + "1,1,4.0,964982703\n1,3\n",
     "not a valid CSV file (line 3 does not have the header's fields: '1,3')"),
    (_RATINGS_HEADER + "1,1,four,964982703\n", 'not a valid CSV file (a value that is not a number (For input string: '
                                                '"four"))'),
    ("movieId,userId,rating,timestamp\n1,1,4.0,964982703\n",
     "not a valid CSV file (its header names movieId, userId, rating, timestamp; expected userId, movieId, rating, "
     "timestamp)"),
])
def test_9_a_bad_ratings_csv_in_a_spark_job_is_one_line_naming_the_file(spark, tmp_path, capsys, ratings, cause):
    path = tmp_path / "ratings.csv"
    path.write_text(ratings)
    assert main(["retrieval", "samples", "--out", str(tmp_path / "out"), "--ratings", str(path)]) == 2
    _, err = capsys.readouterr()
    assert err.strip().splitlines() == [f"sparrow-llm: error: {path}: {cause}"]
    assert not (tmp_path / "out").exists()


def test_9_a_bad_movies_csv_in_a_spark_job_is_one_line_naming_the_file(tmp_path, capsys):
    movies = tmp_path / "movies.csv"
    movies.write_text('movieId,title,genres\n1,Toy Story (1995),Animation\n2,"Jumanji, (1995),Adventure\n')
    # A session of the job's own (the live one, else a new one): a module before this one may have stopped the
    # shared `spark` fixture's.
    with pytest.raises(ConfigError) as raised, session(None, "local[1]", "test") as spark:
        read_movies(spark, movies).collect()  # found by the job that reads the row (FAILFAST), translated by `session`
    assert str(raised.value) == (f"{movies}: not a valid CSV file (line 3 does not have the header's fields: "
                                 "'2,\"Jumanji, (1995),Adventure')")
    ratings = tmp_path / "ratings.csv"
    ratings.write_text(_RATINGS_HEADER + "1,1,4.0,964982703\n")
    movies.write_text("")
    assert main(["features", "--out", str(tmp_path / "out"), "--ratings", str(ratings), "--movies", str(movies)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"sparrow-llm: error: {movies}: the file is empty (not even a header line)"]
    assert not (tmp_path / "out").exists()


# ---- case 11: a timeout names the call, the limit and the setting that raises it --------------------

def _stop(pid: int) -> None:
    """SIGSTOP, and wait until every thread of the process is stopped: kill() returns before that, and a JVM thread
    already on the other core can still answer a call in between (it did once, on a loaded machine)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    tasks = Path(f"/proc/{pid}/task")
    while time.monotonic() < deadline:
        states = []
        for task in tasks.iterdir():
            try:
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
        if all(state == "T" for state in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop within 10 s")


def test_11_a_bridge_call_that_times_out_names_the_call_the_limit_and_the_setting(built_bridge, tmp_path, caplog):
    """A JVM that lives but does not answer (SIGSTOP, as an overloaded machine can make it): one BridgeTimeout
    after the call timeout, not tried again, no py4j traceback; the next call after it answers again works."""
    settings = _private_settings(tmp_path / "home").replace(bridge={"call_timeout_s": 1.5})
    with HostProcess(settings) as host:
        for connected in (True, False):  # a call on an open connection; a connection's handshake
            with BridgeClient(settings.bridge) as client:
                if connected:
                    assert client.info()["movies"] == 755
                _stop(host.pid)
                try:
                    started = time.monotonic()
                    with caplog.at_level(logging.DEBUG), pytest.raises(BridgeTimeout) as raised:
                        client.user_ids()
                    waited = time.monotonic() - started
                finally:
                    os.kill(host.pid, signal.SIGCONT)
                assert str(raised.value) == (
                    f"userIds: the bridge at {client.address} gave no answer within 1.5 s (its JVM is overloaded or "
                    "stuck); to wait longer, raise SPARROW_LLM_BRIDGE_TIMEOUT_S")
                assert 1.5 <= waited < 2.9  # once, not tried again
                assert not [r for r in caplog.records if r.exc_info or r.name.startswith("py4j")]
                assert len(client.user_ids()) > 600  # answers again on a fresh connection
        port = json.loads(settings.bridge.connect_file.read_text())["port"]
        _stop(host.pid)
        try:
            proc = _cli({"SPARROW_LLM_HOME": str(settings.host.work_dir), "SPARROW_LLM_BRIDGE_TIMEOUT_S": "1.5"},
                        "bridge", "info")
            out, err = proc.communicate(timeout=60)
        finally:
            os.kill(host.pid, signal.SIGCONT)
    assert proc.returncode == 2
    assert err.splitlines() == [f"sparrow-llm: error: info: the bridge at GatewayAddress(127.0.0.1:{port}"
                                f", http={settings.host.http_port}) gave no answer within 1.5 s (its JVM is overloaded or "
                                "stuck); to wait longer, raise SPARROW_LLM_BRIDGE_TIMEOUT_S"], err


def test_11_an_http_request_that_times_out_names_the_url_the_limit_and_the_setting():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts, never answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}/getrecforyou?id=1&size=5&model=llm"
        with pytest.raises(HostError) as raised:
            http_get(url, 0.5)
    assert str(raised.value) == (f"GET {url}: the host gave no answer within 0.5 s (it is overloaded or stuck); to wait "
                                 "longer, raise SPARROW_LLM_HTTP_TIMEOUT_S")


# ---- case 10: nothing left behind by a killed run; EASE's memory checked up front ------------------

def _killed_when(proc: subprocess.Popen, folder: Path, pattern: str) -> Path:
    """kill -9 of `proc` once a folder matching `pattern` appears in `folder`: the leftover."""
    deadline = time.monotonic() + 240
    while not (found := list(folder.glob(pattern)) if folder.is_dir() else []):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    return found[0]


def test_10_a_dequantisation_killed_by_sigkill_leaves_no_folder_behind(tmp_path):
    source = model_source(None)
    models = tmp_path / "models"
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                             "from sparrow_llm.rankers.llm.local_lm import converted_model; "
                             "converted_model(Path(sys.argv[1]), Path(sys.argv[2]))", str(source), str(models)],
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stderr=subprocess.PIPE)
    leftover = _killed_when(proc, models, ".*.publish-*")
    # Another process finished the conversion meanwhile (here: the machine's own, linked in): the next load
    # reuses it and removes the dead run's folder.
    real = converted_model(source, LLMSettings.models_dir)
    (models / real.name).symlink_to(real)
    assert converted_model(source, models) == models / real.name
    assert not leftover.exists() and sorted(p.name for p in models.iterdir()) == [real.name]


def test_10_a_killed_retrieval_prepare_leaves_no_temp_folder(tmp_path):
    data = _data_folder(tmp_path / "data", (FIXTURE_WEBROOT / "sampledata" / "ratings.csv").read_text())
    env = {"SPARROW_LLM_HOME": str(tmp_path / "home"), "SPARROW_LLM_DATA_DIR": str(data)}
    proc = _cli(env, "retrieval", "prepare", "--models", "ease", "--no-progress")
    settings = Settings().replace(host={"data_dir": data, "work_dir": tmp_path / "home"})
    parent = retrieval_checkpoint.model_dir(settings, "ease").parent
    leftover = _killed_when(proc, parent, ".ease.publish-*")
    retrieval_checkpoint.prepare_model(settings, "popularity", progress=False)  # any next training cleans up
    assert not leftover.exists() and sorted(p.name for p in parent.iterdir()) == ["popularity"]


def test_10_ease_on_a_catalogue_too_large_for_memory_is_one_line_before_allocating(tmp_path, monkeypatch, capsys):
    available = available_memory()
    n = max(41_000, math.isqrt(available // EASE_BYTES_PER_CELL) + 1)  # the 41k catalogue, or larger
    data = _data_folder(tmp_path / "data", "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{m},4.0,{1000 * u + m}\n" for u in range(1, 9) for m in range(1, 7)))
    (data / "sampledata" / "movies.csv").unlink()
    (data / "sampledata" / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{m},Movie {m} (2000),Drama\n" for m in range(1, n + 1)))
    monkeypatch.setenv("SPARROW_LLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPARROW_LLM_DATA_DIR", str(data))
    with measure() as cost:
        assert main(["retrieval", "prepare", "--models", "ease", "--no-progress"]) == 2
    assert cost.added_gib < 1  # refused before the items x items arrays
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.fullmatch(
        rf"sparrow-llm: error: EASE on a catalogue of {n} movies needs {n * n * EASE_BYTES_PER_CELL / 2 ** 30:.1f} "
        rf"GiB for its {n} x {n} matrices, and \d+\.\d GiB of memory is available: use a base that scales, "
        r"SPARROW_LLM_BASE=sasrec \(or popularity\)", err[0]), err
