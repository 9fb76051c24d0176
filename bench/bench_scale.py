"""Cost at the size of a real deploy: synthetic deploys of 1k, 10k and 100k users (scale_data.py: the
fixture's rating, genre and popularity distributions, a catalogue growing with the users), each loaded by
the stand-in host under the bridge launcher, and every offline stage timed over it:

  fetch          the gateway alone: every user's candidates (the host's recall, 800 per user), history and
                 movies with embeddings, in bulk calls of 64 users (what `rerank` fetches)
  rerank         `run_rerank(recent)` in-process: fetch, rank, write every user's record (file store)
  rerank-spark   `run_rerank_spark(recent)` on local[2]: the driver fetches, executors rank and write
  profiles       `run_profiles` (local-minilm backend, local[2]): a PALR profile per user, file store
  llm            `run_rerank(llm)` (local-minilm backend) on a sample of users (time-boxed)
  clickprompt    `run_rerank(clickprompt)` on a sample, after training the data folder's checkpoint (time-boxed)
  store-file     writing `recent`-sized records (file store, fsync), 64 users per call
  store-redis    the same into Redis (a redis-server of its own), one MULTI/EXEC per 64 users
  stage          /getrecforyou?model=recent p50/p99 with the launcher idle, then while `rerank` rewrites
                 every user's record (the bulk write of a nightly run)

Each stage runs in a child process of its own: its peak RSS (the driver) is the child's VmHWM, and
a Spark stage reports its JVM's peak (VmHWM; local[2] runs the executors in that JVM). The host JVM's peak
is read at the end of each size; it gets -Xmx from the data (see `host_heap`). A stage that the previous
size says would not finish within `--budget-s` is skipped and says so; a child past the budget is stopped.

Growth exponent k of a stage from the smallest to the largest size that ran it: time grows as users^k
(k = 1 + log(ms/user ratio) / log(user ratio); target <= 1.1), with flat memory per process: the driver's
peak within 1.5x, and the Spark JVM running every size in the same fixed heap (its RSS, which a JVM grows
lazily up to the cap, is printed). The host JVM holds every rating by design: its heap is reported, not judged.

    python bench/bench_scale.py [--sizes 1000,10000,100000] [--budget-s 900] [--sample 100] [--out DIR]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load: the children share two cores

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import free_port, pct
from scale_data import generate_deploy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import SHARED, start_redis  # noqa: E402  (a real redis-server on a free port)

from sparrow_llm.bridge.host import HostProcess  # noqa: E402
from sparrow_llm.config import Settings  # noqa: E402

GIB, MIB = 1024 ** 3, 1024 ** 2
FULL_STAGES = ("fetch", "rerank", "rerank-spark", "profiles", "store-file", "store-redis")
SAMPLED_STAGES = ("llm", "clickprompt")
STORE_USERS = 20_000  # records written by the store stages at most: ~50 KiB each, the time per user is what counts
EXPONENT, MEMORY_GROWTH = 1.1, 1.5
# The Spark stages' JVM heap, the same at every size: a stage that needs more as users grow fails, and the JVM's
# RSS shows what it uses within the cap (an uncapped JVM grows its heap lazily, which says little).
SPARK_DRIVER_MEMORY = "1g"


def host_heap(ratings: int) -> str:
    """-Xmx for the stand-in host: ~300 B per rating held (Rating objects in a user's and a movie's lists,
    measured as VmHWM below) plus 512 MiB for Jetty, the bridge and headroom; whole GiB, at least 1."""
    return f"{max(1, math.ceil((ratings * 300 + 512 * MIB) / GIB))}g"


def stage_settings(work: Path, deploy: Path, redis_port: int | None = None) -> Settings:
    store = {"kind": "redis", "redis_port": redis_port} if redis_port else {"dir": work / "store"}
    # The rerankers rerank the host's candidates (base None): their default base, EASE, keeps an items x items
    # matrix, 38 GB for the 100k deploy's catalogue.
    return Settings.from_env().replace(host={"data_dir": deploy, "work_dir": work, "shared_dir": SHARED},
                                       bridge={"connect_file": work / "gateway.json"}, store=store,
                                       llm={"backend": "local-minilm"}, base=None)


def peak_mib(pid: int) -> float:
    """A process's peak resident set (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- the children: one stage each, a RESULT line on stdout ---------------------------------------------------
def _spark(app: str):
    from sparrow_llm.spark import spark_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = spark_session("local[2]", app=app, driver_memory=SPARK_DRIVER_MEMORY)
    return spark, int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())


def _records(users: list[int], items: int):
    from sparrow_llm.domain import RankedItem, Record

    return [Record("recent", u, tuple(RankedItem(m, 1.0 - m / items, f"close to Movie {m % 50}, which you liked")
                                      for m in range(1, items + 1)), "item2vec", "bench") for u in users]


def child(stage: str, work: Path, deploy: Path, users: int, sample: int, redis_port: int | None) -> dict:
    from sparrow_llm.bridge.client import BridgeClient
    from sparrow_llm.candidates import fetch_contexts, user_batches
    from sparrow_llm.pipeline.rerank import run_rerank
    from sparrow_llm.store import FileStore, open_default_store

    settings = stage_settings(work, deploy, redis_port if stage == "store-redis" else None)
    out: dict = {}
    started = time.perf_counter()
    if stage == "fetch":
        store = FileStore(work / "fetch-store")
        with BridgeClient(settings.bridge) as client:
            batches = user_batches(client, settings, None, None)
            for batch in batches:
                fetch_contexts(client, store, batch, with_emb=True)
        out["users"] = sum(map(len, batches))
    elif stage == "rerank":
        out["users"] = run_rerank(settings, "recent", progress=False).users
    elif stage == "rerank-spark":
        from sparrow_llm.pipeline.rerank_spark import run_rerank_spark

        spark, pid = _spark("bench-scale-rerank")
        started = time.perf_counter()
        out["users"] = run_rerank_spark(settings, "recent", store=FileStore(work / "spark-store"), spark=spark,
                                        progress=False).users
        out["jvm_mib"] = peak_mib(pid)
        spark.stop()
    elif stage == "profiles":
        from sparrow_llm.rankers.palr.profiles import run_profiles

        spark, pid = _spark("bench-scale-profiles")
        started = time.perf_counter()
        out["users"] = run_profiles(settings, spark=spark, progress=False).users
        out["jvm_mib"] = peak_mib(pid)
        spark.stop()
    elif stage in SAMPLED_STAGES:
        if stage == "clickprompt":
            from sparrow_llm.rankers.clickprompt.checkpoint import prepare_clickprompt

            prepare_clickprompt(settings, progress=False)
            out["prepare_s"] = time.perf_counter() - started
            started = time.perf_counter()
        out["users"] = run_rerank(settings, stage, sample=sample, progress=False).users
    else:  # store-file, store-redis
        written = list(range(1, min(STORE_USERS, users) + 1))
        store = FileStore(work / "write-store") if stage == "store-file" else open_default_store(settings)
        for i in range(0, len(written), 64):
            store.put_records(_records(written[i:i + 64], 760))
        store.close()
        out["users"] = len(written)
    out["wall_s"] = time.perf_counter() - started
    out["driver_mib"] = peak_mib(os.getpid())  # this process only (ru_maxrss would carry the parent's over exec)
    return out


# ---- the parent --------------------------------------------------------------------------------------------
class Child:
    """A stage in a child process, stopped past the budget: its RESULT line, or what went wrong."""

    def __init__(self, stage: str, work: Path, deploy: Path, users: int, args, redis_port: int):
        argv = [sys.executable, __file__, "--child", stage, "--work", str(work), "--deploy", str(deploy),
                "--users", str(users), "--sample", str(args.sample), "--redis-port", str(redis_port)]
        self.stage, self.budget_s = stage, args.budget_s
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(work / f"{stage}.log", "ab"), text=True)

    def wait(self) -> dict:
        timer = threading.Timer(self.budget_s, self.proc.kill)
        timer.start()
        stdout = self.proc.stdout.read()
        self.proc.wait()
        timer.cancel()
        result = next((json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")), None)
        if result is None:
            over = time.perf_counter() - self.started >= self.budget_s
            return {"error": f"past the {self.budget_s:.0f} s budget" if over else f"exit {self.proc.returncode}"}
        return result


def stage_latency(port: int, users: list[int], requests: int, stop=None) -> list[float]:
    """Latencies of /getrecforyou?model=recent from 4 keep-alive threads: `requests` of them, or until `stop`."""
    import http.client

    rng, latencies, lock = random.Random(7), [], threading.Lock()
    paths = [f"/getrecforyou?id={rng.choice(users)}&size=32&model=recent" for _ in range(requests)]

    def worker(chunk):
        conn, mine = http.client.HTTPConnection("127.0.0.1", port, timeout=30), []
        for path in chunk:
            if stop is not None and stop.is_set():
                break
            t = time.perf_counter()
            conn.request("GET", path)
            conn.getresponse().read()
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(paths[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def run_size(users: int, args, out: Path, previous: dict | None) -> dict:
    deploy_dir, work = out / f"deploy-{users}", out / f"work-{users}"
    work.mkdir(parents=True, exist_ok=True)
    deploy = generate_deploy(deploy_dir, users, fixture=SHARED / "sparrowrecsys" / "webroot", seed=args.seed)
    print(deploy.line(), flush=True)
    heap = host_heap(deploy.ratings)
    settings = stage_settings(work, deploy_dir).replace(host={"http_port": free_port()})
    size = {"users": users, "ratings": deploy.ratings, "movies": deploy.movies, "heap": heap, "stages": {}}
    redis = start_redis()
    try:
        started = time.perf_counter()
        with HostProcess(settings, extra_env={"JAVA_TOOL_OPTIONS": f"-Xmx{heap}"}) as host:
            size["host_start_s"] = time.perf_counter() - started
            for stage in args.stages:
                sampled = stage in SAMPLED_STAGES
                done = (previous or {}).get("stages", {}).get(stage, {})
                if "budget" in done.get("error", ""):
                    size["stages"][stage] = {"error": f"skipped: past the budget at {previous['users']:,} users"}
                    print(f"  {stage}: {size['stages'][stage]['error']}", flush=True)
                    continue
                if "ms_per_user" in done:
                    # The users of a full stage, or the training of a sampled one, grow with the deploy.
                    growth = users / previous["users"] * 1.2
                    projected = growth * (done.get("prepare_s", 0.0) if sampled else done["wall_s"])
                    if projected > args.budget_s:
                        size["stages"][stage] = {
                            "error": f"skipped: ~{projected:.0f} s projected > {args.budget_s:.0f} s"}
                        print(f"  {stage}: {size['stages'][stage]['error']}", flush=True)
                        continue
                result = Child(stage, work, deploy_dir, users, args, redis.port).wait()
                if "users" in result and result["users"]:
                    result["ms_per_user"] = 1000 * result["wall_s"] / result["users"]
                size["stages"][stage] = result
                print(f"  {stage}: {json.dumps(result)}", flush=True)
                if stage == "rerank" and "error" not in result and "stage" in args.stages_extra:
                    size["stage"] = serving_under_write(host, work, deploy_dir, args, redis.port, users)
                    print(f"  stage: {json.dumps(size['stage'])}", flush=True)
            size["host_mib"] = peak_mib(host.pid)
        info = redis.client().info("memory")
        size["redis_mib"] = info["used_memory_peak"] / MIB
    finally:
        redis.stop()
    return size


def serving_under_write(host: HostProcess, work: Path, deploy: Path, args, redis_port: int, users: int) -> dict:
    """The stage's latency idle, then while a second `rerank` child rewrites every record."""
    ids = list(range(1, users + 1))
    stage_latency(host.http_port, ids, args.stage_requests)  # warm-up: the JIT, the page cache
    idle = stage_latency(host.http_port, ids, args.stage_requests)
    stop = threading.Event()
    child_proc = Child("rerank", work, deploy, users, args, redis_port)
    busy: list[float] = []
    loader = threading.Thread(target=lambda: busy.extend(stage_latency(host.http_port, ids, 10 ** 7, stop)),
                              daemon=True)
    loader.start()
    try:
        rewrite = child_proc.wait()
    finally:
        stop.set()
        loader.join()
    return {"idle_p50_ms": pct(idle, 50), "idle_p99_ms": pct(idle, 99), "busy_p50_ms": pct(busy, 50),
            "busy_p99_ms": pct(busy, 99), "busy_requests": len(busy), "rewrite_s": rewrite.get("wall_s")}


def report(sizes: list[dict]) -> list[str]:
    lines = [f"{'users':>8} {'stage':13} {'users run':>9} {'wall s':>8} {'ms/user':>9} {'driver MiB':>10} "
             f"{'Spark JVM MiB':>13}"]
    for size in sizes:
        for stage, r in size["stages"].items():
            if "error" in r:
                lines.append(f"{size['users']:>8,} {stage:13} {r['error']}")
                continue
            jvm = f"{r['jvm_mib']:.0f}" if "jvm_mib" in r else "-"
            extra = f"  (+ {r['prepare_s']:.0f} s training)" if "prepare_s" in r else ""
            lines.append(f"{size['users']:>8,} {stage:13} {r['users']:>9,} {r['wall_s']:>8.1f} "
                         f"{r['ms_per_user']:>9.2f} {r['driver_mib']:>10.0f} {jvm:>13}{extra}")
        if "stage" in size:
            s = size["stage"]
            lines.append(f"{size['users']:>8,} {'stage':13} idle p50 {s['idle_p50_ms']:.1f} / "
                         f"p99 {s['idle_p99_ms']:.1f} ms; "
                         f"during the bulk rewrite ({s['rewrite_s'] or 0:.0f} s) p50 {s['busy_p50_ms']:.1f} / "
                         f"p99 {s['busy_p99_ms']:.1f} ms over {s['busy_requests']} requests")
        lines.append(f"{size['users']:>8,} host JVM: -Xmx{size['heap']}, "
                     f"peak RSS {size.get('host_mib', float('nan')):.0f} MiB, "
                     f"start-up {size.get('host_start_s', float('nan')):.1f} s ({size['ratings']:,} ratings, "
                     f"{size['movies']:,} movies); Redis peak {size.get('redis_mib', float('nan')):.0f} MiB")
    return lines


def verdicts(sizes: list[dict], stages) -> list[str]:
    lines = []
    for stage in stages:
        ran = [(s["users"], s["stages"][stage]) for s in sizes if "ms_per_user" in s["stages"].get(stage, {})]
        if len(ran) < 2:
            lines.append(f"----  {stage}: ran at {len(ran)} size(s), no exponent")
            continue
        (n0, a), (n1, b) = ran[0], ran[-1]
        k = 1 + math.log(b["ms_per_user"] / a["ms_per_user"]) / math.log(n1 / n0)
        growth = b["driver_mib"] / a["driver_mib"]
        jvm = (f"; Spark JVM within its fixed {SPARK_DRIVER_MEMORY} heap at every size "
               f"(RSS x{b['jvm_mib'] / a['jvm_mib']:.2f})" if "jvm_mib" in a and "jvm_mib" in b else "")
        ok = k <= EXPONENT and growth <= MEMORY_GROWTH
        lines.append(f"{'PASS' if ok else 'FAIL'}  {stage}: time ~ users^{k:.2f} from {n0:,} to {n1:,} (target <= "
                     f"{EXPONENT}); driver peak x{growth:.2f} (flat: <= x{MEMORY_GROWTH}){jvm}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--stages", default=",".join((*FULL_STAGES, *SAMPLED_STAGES, "stage")))
    ap.add_argument("--budget-s", type=float, default=900.0, help="time limit of one stage at one size")
    ap.add_argument("--sample", type=int, default=100, help="users of the sampled stages (llm, clickprompt)")
    ap.add_argument("--stage-requests", type=int, default=800, help="requests of the idle stage measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="deploys and logs (default: a temporary folder, removed)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--deploy", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--users", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = child(args.child, args.work, args.deploy, args.users, args.sample, args.redis_port)
        print("RESULT " + json.dumps(result))
        return 0
    requested = [s for s in args.stages.split(",") if s]
    args.stages_extra = {s for s in requested if s == "stage"}
    args.stages = [s for s in requested if s != "stage"]
    if args.stages_extra and "rerank" not in args.stages:
        args.stages.insert(0, "rerank")  # the stage measurement reads rerank's records
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        out = (args.out or Path(tmp)).resolve()
        sizes: list[dict] = []
        for users in (int(s) for s in args.sizes.split(",")):
            sizes.append(run_size(users, args, out, sizes[-1] if sizes else None))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    print(f"\nmachine: {os.cpu_count()} cores, {memory:.0f} GiB, load average {os.getloadavg()[0]:.1f}; Spark stages "
          f"on local[2] with a {SPARK_DRIVER_MEMORY} driver heap, one torch/OpenMP thread")
    print("\n".join(report(sizes)))
    print("\n".join(verdicts(sizes, args.stages)))
    ran = [s["users"] for s in sizes if any("ms_per_user" in r for r in s["stages"].values())]
    print(f"largest size that ran: {max(ran):,} users" if ran else "no size ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
