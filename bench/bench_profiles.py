"""The profile job (`sparrow-llm profiles`) against the fake GLM server: do partitions x concurrency calls
really stay in flight?

Every call takes a fixed latency L at the server, so C calls in flight profile at best C / L users per
second. The job runs N fixture users in a fresh store (zhipuai backend, the real client) and reports:

  * the job: its wall time without Spark's start-up (reading the CSVs, grouping histories and the
    broadcast included); its users/s as a fraction of C / L is the figure of merit (target >= 0.8);
  * the LLM phase alone: first request to last answer, as the server saw them, against C / L.

Spark's start-up is the session and a first small job on other users (the JVM's warm-up and the Python
workers' start, paid once per session); both are printed, neither is counted.

    python bench/bench_profiles.py [--users 595] [--latency 0.2] [--partitions 2] [--concurrency 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fake_glm import VALID_KEY, FakeGLM, Reply  # noqa: E402  (the fake server the tests use)

from sparrow_llm.config import Settings  # noqa: E402
from sparrow_llm.schema import COL_USER, RATINGS_CSV  # noqa: E402
from sparrow_llm.rankers.palr.profiles import run_profiles  # noqa: E402
from sparrow_llm.spark import spark_session

TARGET = 0.8


class _Clock:
    """Arrival times of the requests (the server calls `answer` as each one arrives)."""

    def __init__(self, latency_s: float):
        self.latency_s = latency_s
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

    def answer(self, body: dict) -> Reply:
        with self._lock:
            self.arrivals.append(time.monotonic())
        return Reply(content="Enjoys crime dramas and 90s comedies; avoids horror.", delay_s=self.latency_s,
                     usage=(400, 20))

    def span_s(self) -> float:
        return max(self.arrivals) + self.latency_s - min(self.arrivals)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=595, help="fixture users to profile (N; the rest warm up)")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per call at the fake server (L)")
    ap.add_argument("--partitions", type=int, default=2, help="Spark partitions (<= the master's task slots)")
    ap.add_argument("--concurrency", type=int, default=4, help="calls in flight per partition")
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()
    in_flight = args.partitions * args.concurrency
    ideal = in_flight / args.latency

    import pandas as pd

    settings = Settings().replace(llm={"backend": "zhipuai", "api_key": VALID_KEY, "concurrency": args.concurrency})
    everyone = sorted(pd.read_csv(settings.host.data_webroot / RATINGS_CSV)[COL_USER].unique())
    users, warm_up_users = everyone[: args.users], everyone[args.users:][:in_flight]
    clock = _Clock(args.latency)
    server = FakeGLM()
    server.start()
    server.default = clock.answer
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        started = time.perf_counter()
        spark = spark_session(args.master, app="sparrow-llm-bench")
        session_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory(prefix="sparrow-llm-bench-") as tmp:
            run = settings.replace(llm={"base_url": server.url})
            warm_up = run_profiles(run.replace(store={"dir": Path(tmp) / "warm-up"}), users=warm_up_users,
                                   spark=spark, partitions=args.partitions, progress=False)
            clock.arrivals.clear()
            calls_before = server.calls
            summary = run_profiles(run.replace(store={"dir": Path(tmp) / "store"}), users=users, spark=spark,
                                   partitions=args.partitions, progress=False)
        spark.stop()
    finally:
        server.stop()

    print(summary.line())
    calls = server.calls - calls_before
    if summary.written != len(users) or calls != len(users):
        print(f"FAIL: {summary.written} profiles written, {calls} calls for {len(users)} users")
        return 1
    span = clock.span_s()
    phase_rate, job_rate = len(users) / span, len(users) / summary.wall_s
    print(f"N={len(users)} users, L={args.latency:.3f} s per call, C={in_flight} in flight "
          f"({args.partitions} partitions x {args.concurrency}); ideal C/L = {ideal:.1f} users/s "
          f"({len(users) / ideal:.2f} s); most in flight at the server: {server.max_in_flight}")
    print(f"LLM phase: {span:.2f} s, {phase_rate:.1f} users/s = {phase_rate / ideal:.2f} of ideal")
    print(f"job wall without Spark start-up: {summary.wall_s:.2f} s, {job_rate:.1f} users/s = "
          f"{job_rate / ideal:.2f} of ideal")
    print(f"Spark start-up, not counted: session {session_s:.2f} s, first job ({len(warm_up_users)} other users) "
          f"{warm_up.wall_s:.2f} s")
    ok = job_rate / ideal >= TARGET
    print(f"{'PASS' if ok else 'FAIL'}: the job at {job_rate / ideal:.2f} of C/L (target >= {TARGET}); "
          f"its LLM phase at {phase_rate / ideal:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
