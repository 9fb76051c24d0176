"""What a one-off job costs: wall time and the peak resident memory of this process while it ran.

The peak is sampled from /proc/self/statm in a background thread (numpy, scipy and torch release the GIL
in their heavy calls, so the sampler keeps up). Spark's JVM and other processes are not counted. Where
/proc is missing, `getrusage`'s lifetime peak is the fallback (it then covers the whole process so far).
"""
from __future__ import annotations

import os
import resource
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["Cost", "measure"]

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_INTERVAL_S = 0.02


@dataclass
class Cost:
    seconds: float = 0.0
    peak_bytes: int = 0  # the process's peak resident memory during the block
    start_bytes: int = 0  # its resident memory when the block began

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30

    @property
    def added_gib(self) -> float:
        """How far the block raised resident memory above where it started."""
        return max(0, self.peak_bytes - self.start_bytes) / 2**30


def _resident_bytes() -> int:
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


@contextmanager
def measure() -> Iterator[Cost]:
    """`with measure() as cost: ...` fills `cost` (seconds, peak and starting resident memory) on exit."""
    cost = Cost(start_bytes=_resident_bytes())
    cost.peak_bytes = cost.start_bytes
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(_INTERVAL_S):
            cost.peak_bytes = max(cost.peak_bytes, _resident_bytes())

    thread = threading.Thread(target=sample, name="memory-meter", daemon=True)
    started = time.perf_counter()
    thread.start()
    try:
        yield cost
    finally:
        stop.set()
        thread.join()
        cost.peak_bytes = max(cost.peak_bytes, _resident_bytes())
        cost.seconds = time.perf_counter() - started
