"""Safe on a real deploy, round 2 (issue 18), cases 1, 2, 3 and 8: nothing private over HTTP, the legacy move
deletes nothing, a NaN rating is not fatal, and exits a supervisor can act on. Real parts: the built bridge, the
stand-in host JVM, the CLI as a process where its stderr is what is asserted. The Java halves are JUnit:
HostStaticServletTest, ConnectFileTest, BridgeConfigTest, JsonTest, LauncherIT."""
from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sparrow_llm.bridge.client import BridgeClient, BridgeUnavailable
from sparrow_llm.bridge.host import HostProcess
from sparrow_llm.cli import main
from sparrow_llm.config import REPO_ROOT, Settings
from sparrow_llm.domain import RankedItem, Record
from sparrow_llm.evaluation.datacopy import write_eval_copy
from sparrow_llm.store import FileStore, adopt_legacy_store

from tests.conftest import FIXTURE_WEBROOT, SHARED, free_port

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
