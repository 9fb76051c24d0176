"""What the benchmarks share: a stand-in host of their own on free ports, and percentiles."""
from __future__ import annotations

import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sparrow_llm.config import Settings
from sparrow_llm.bridge.host import HostProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_settings(work_dir: Path, **store) -> Settings:
    return Settings.from_env().replace(
        host={"work_dir": work_dir, "http_port": free_port()},
        bridge={"connect_file": work_dir / "gateway.json"},
        store={"dir": work_dir / "store", **store},
    )


@contextmanager
def bench_host(**store):
    """A stand-in host (or SPARROW_HOME's) under the launcher, in a temp work dir."""
    with tempfile.TemporaryDirectory(prefix="sparrow-llm-bench-") as tmp:
        settings = bench_settings(Path(tmp), **store)
        with HostProcess(settings) as host:
            yield settings, host


def pct(samples_s, q: float) -> float:
    """The q-th percentile of durations in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(samples_s) * 1000.0, q))
