"""The profile job (`sparrow-llm profiles`) against the fake GLM server: do partitions x concurrency calls
really stay in flight, fixed Spark work included?

Every call takes a fixed latency L at the server, so C calls in flight profile at best C / L users per
second. For each size (the fixture's 603 users, and synthetic deploys of N users from scale_data.py) the job
profiles every user into a fresh store (zhipuai backend, the real client) and reports:

  * the job: its wall time without Spark's start-up (reading the CSVs, grouping histories and the
    broadcast included); its users/s as a fraction of C / L is the figure of merit (target >= 0.9);
  * the LLM phase alone: first request to last answer, as the server saw them, against C / L.

Spark's start-up is the session and a first small job on a few users into another store (the JVM's
warm-up and the Python workers' start, paid once per session); both are printed, neither is counted.

    python bench/bench_profiles.py [--sizes fixture,10000] [--latency 0.2] [--partitions 2] [--concurrency 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
from scale_data import generate_deploy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import SHARED  # noqa: E402
from tests.fake_glm import VALID_KEY, FakeGLM, Reply  # noqa: E402  (the fake server the tests use)

from sparrow_llm.config import Settings  # noqa: E402
from sparrow_llm.rankers.palr.profiles import run_profiles  # noqa: E402
from sparrow_llm.schema import COL_USER, RATINGS_CSV  # noqa: E402
from sparrow_llm.spark import spark_session  # noqa: E402

TARGET = 0.9
FIXTURE = SHARED / "sparrowrecsys" / "webroot"


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


def measure(spark, settings: Settings, clock: _Clock, server: FakeGLM, args, store_root: Path) -> bool:
    """One size: a warm-up job on a few users, then every user; prints the figures, returns the verdict."""
    in_flight = args.partitions * args.concurrency
    ideal = in_flight / args.latency
    users = sorted(pd.read_csv(settings.host.data_webroot / RATINGS_CSV, usecols=[COL_USER])[COL_USER].unique())
    warm_up = run_profiles(settings.replace(store={"dir": store_root / "warm-up"}), users=users[:in_flight],
                           spark=spark, partitions=args.partitions, progress=False)
    clock.arrivals.clear()
    calls_before = server.calls
    summary = run_profiles(settings.replace(store={"dir": store_root / "store"}), spark=spark,
                           partitions=args.partitions, progress=False)
    calls = server.calls - calls_before
    print(summary.line())
    if summary.written != len(users) or calls != len(users):
        print(f"FAIL: {summary.written} profiles written, {calls} calls for {len(users)} users")
        return False
    span = clock.span_s()
    phase_rate, job_rate = len(users) / span, len(users) / summary.wall_s
    print(f"N={len(users):,} users, L={args.latency:.3f} s per call, C={in_flight} in flight "
          f"({args.partitions} partitions x {args.concurrency}); ideal C/L = {ideal:.1f} users/s "
          f"({len(users) / ideal:.1f} s); most in flight at the server: {server.max_in_flight}")
    print(f"LLM phase: {span:.2f} s, {phase_rate:.1f} users/s = {phase_rate / ideal:.3f} of ideal; "
          f"fixed work outside it {summary.wall_s - span:.2f} s")
    print(f"job wall without Spark start-up: {summary.wall_s:.2f} s, {job_rate:.1f} users/s = "
          f"{job_rate / ideal:.3f} of ideal (warm-up job on {len(users[:in_flight])} users: {warm_up.wall_s:.2f} s)")
    ok = job_rate / ideal >= TARGET
    print(f"{'PASS' if ok else 'FAIL'}: {len(users):,} users, the job at {job_rate / ideal:.3f} of C/L "
          f"(target >= {TARGET}); its LLM phase at {phase_rate / ideal:.3f}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="fixture,10000", help="'fixture' (603 users) and/or synthetic user counts")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per call at the fake server (L)")
    ap.add_argument("--partitions", type=int, default=2, help="Spark partitions (<= the master's task slots)")
    ap.add_argument("--concurrency", type=int, default=4, help="calls in flight per partition")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--seed", type=int, default=0, help="of the synthetic deploys")
    args = ap.parse_args()

    clock = _Clock(args.latency)
    server = FakeGLM()
    server.start()
    server.default = clock.answer
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    verdicts = []
    try:
        started = time.perf_counter()
        spark = spark_session(args.master, app="sparrow-llm-bench")
        print(f"Spark session: {time.perf_counter() - started:.2f} s (not counted); load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        base = Settings().replace(host={"shared_dir": SHARED}, llm={
            "backend": "zhipuai", "api_key": VALID_KEY, "concurrency": args.concurrency, "base_url": server.url})
        with tempfile.TemporaryDirectory(prefix="sparrow-llm-bench-") as tmp:
            for i, size in enumerate(s for s in args.sizes.split(",") if s):
                root = Path(tmp) / f"size-{i}"
                if size == "fixture":
                    data = FIXTURE
                else:
                    deploy = generate_deploy(root / "deploy", int(size), fixture=FIXTURE, seed=args.seed)
                    print(deploy.line())
                    data = deploy.path
                verdicts.append(measure(spark, base.replace(host={"data_dir": data}), clock, server, args, root))
        spark.stop()
    finally:
        server.stop()
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
