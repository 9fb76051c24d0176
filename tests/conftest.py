"""Shared fixtures: real parts only (a redis-server, the built bridge, the host JVM on the fixture)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sparrow_llm.config import REPO_ROOT, Settings
from sparrow_llm.bridge.host import HostProcess, build_bridge

SHARED = REPO_ROOT.parent / "shared"
FIXTURE_WEBROOT = SHARED / "sparrowrecsys" / "webroot"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fixture_webroot() -> Path:
    if not (FIXTURE_WEBROOT / "sampledata" / "ratings.csv").is_file():
        pytest.fail(f"fixture data missing at {FIXTURE_WEBROOT} (../shared beside the checkout)")
    return FIXTURE_WEBROOT


@pytest.fixture(scope="session")
def sampledata(fixture_webroot) -> Path:
    return fixture_webroot / "sampledata"


@pytest.fixture(scope="session")
def ratings(sampledata):
    import pandas as pd

    return pd.read_csv(sampledata / "ratings.csv")


@pytest.fixture(scope="session")
def movies(sampledata):
    import pandas as pd

    return pd.read_csv(sampledata / "movies.csv")


class RedisServer:
    def __init__(self, port: int, proc: subprocess.Popen):
        self.port, self.proc = port, proc

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_redis(port: int | None = None) -> RedisServer:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    port = port or free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = RedisServer(port, proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if server.client().ping():
                return server
        except Exception:
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"redis-server did not answer on port {port}")


@pytest.fixture(scope="session")
def redis_server():
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture()
def redis_db(redis_server):
    """A clean database of the session's server."""
    client = redis_server.client()
    client.flushall()
    yield redis_server
    client.flushall()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for every test that needs one (a JVM start costs seconds)."""
    import os
    import sys

    from sparrow_llm.spark import spark_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors run this interpreter (sparrow_llm inside)
    session = spark_session("local[2]", app="sparrow-llm-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def built_bridge() -> Settings:
    settings = Settings()
    if not settings.host.bridge_jar.is_file() or not settings.host.standin_jar.is_file():
        build_bridge(settings)
    return settings


def host_settings(tmp: Path, **store) -> Settings:
    """Settings for a host of our own: free ports, a private work dir, connect file and store."""
    return Settings().replace(
        host={"work_dir": tmp, "http_port": free_port(), "shared_dir": SHARED},
        bridge={"connect_file": tmp / "gateway.json"},
        store={"dir": tmp / "store", **store},
    )


@pytest.fixture(scope="session")
def host(built_bridge, tmp_path_factory, fixture_webroot):
    """One stand-in host under the bridge launcher for the session (file store)."""
    settings = host_settings(tmp_path_factory.mktemp("host"))
    # The tests' own model names: owned from the start (a model only the store lists is picked up within 1 s).
    with HostProcess(settings, extra_env={"SPARROW_LLM_MODELS": "short,stale,broken,fresh,custom"}) as proc:
        yield proc
