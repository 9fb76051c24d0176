"""A Spark standalone cluster on this machine: a master and workers started with PySpark's own `spark-class`
(org.apache.spark.deploy.master.Master / worker.Worker), bound to 127.0.0.1 on free ports, and the
session-wide fixture that stops it. The jobs then run with `master=cluster.url` (`spark://127.0.0.1:N`),
exactly as against a real cluster: their executors are other JVMs with Python workers of their own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest

from tests.conftest import free_port

__all__ = ["StandaloneCluster", "spark_cluster"]

SPARK_HOME = Path(pyspark.__file__).resolve().parent


class StandaloneCluster:
    """`workers` workers of `cores` cores and `memory` each (executors get 1g: `memory` must hold that)."""

    def __init__(self, workers: int = 2, cores: int = 1, memory: str = "1g", work_dir: Path | None = None):
        self.workers, self.cores, self.memory = workers, cores, memory
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="sparrow-llm-cluster-")
        self.work_dir = Path(work_dir or self._tmp.name)
        self.port, self.ui_port = free_port(), free_port()
        self._procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The daemons' environment; executors run this interpreter, which has sparrow_llm installed."""
        return {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_LOG_DIR": str(self.work_dir / "logs"), "PYSPARK_PYTHON": sys.executable,
                "SPARK_NO_DAEMONIZE": "1"}

    def _daemon(self, name: str, *args: str) -> None:
        log = open(self.work_dir / f"{name}.log", "ab")
        self._procs.append(subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], env=self.env(),
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True))
        log.close()

    def start(self, timeout_s: float = 120.0) -> "StandaloneCluster":
        self._daemon("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                     "--port", str(self.port), "--webui-port", str(self.ui_port))
        for i in range(self.workers):
            work = self.work_dir / f"worker-{i}"
            work.mkdir(parents=True, exist_ok=True)
            self._daemon(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                         "--port", str(free_port()), "--webui-port", str(free_port()), "--cores", str(self.cores),
                         "--memory", self.memory, "--work-dir", str(work), self.url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self._procs):
                break
            if self.alive_workers() == self.workers:
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the standalone cluster did not come up with {self.workers} workers; logs in "
                           f"{self.work_dir}:\n{self.log_tail()}")

    def alive_workers(self) -> int:
        """Workers the master lists as ALIVE (its JSON status page); 0 while it is not up."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as resp:
                return sum(w.get("state") == "ALIVE" for w in json.load(resp).get("workers", []))
        except (OSError, ValueError):
            return 0

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(f"{p.name}: {line}" for p in sorted(self.work_dir.glob("*.log"))
                         for line in p.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for proc in reversed(self._procs):  # workers first, then the master
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def spark_cluster():
    """A master and two 1-core workers for the session."""
    with StandaloneCluster(workers=2, cores=1, memory="1g") as cluster:
        yield cluster
