"""Stage overhead, like with like, under a loopback load (keep-alive connections, `--concurrency` threads):

  host alone        the host's own server (its main class, no plugin on the classpath), `model=emb`
  pass-through      the same host under the bridge launcher, `model=emb`: the stage hands the request to
                    the host's servlet (what every request the plugin does not own costs)
  stored list       under the launcher, `model=recent`: the stage reads the user's record from the store and
                    tops it up with the host's order (what a plugin model costs)

Both JVMs run on the same data, side by side; the three are measured in alternating blocks, against drift.
Targets, each against the host alone: p50 ratio <= 1.2, p99 ratio <= 1.5, zero errors.

    python bench/bench_stage.py [--requests 2000] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import threading
import time
from contextlib import contextmanager

from common import bench_host, free_port, pct

from sparrow_llm.bridge.host import HostProcess
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.store import open_default_store

HOST_MAIN = "com.sparrowrecsys.online.RecSysServer"
P50_RATIO, P99_RATIO = 1.2, 1.5


def load(port: int, paths: list[str], concurrency: int) -> tuple[list[float], int]:
    """Each thread keeps one keep-alive connection; returns latencies and the error count."""
    latencies, errors, lock = [], [0], threading.Lock()
    chunks = [paths[i::concurrency] for i in range(concurrency)]

    def worker(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine, bad = [], 0
        for path in chunk:
            t = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            mine.append(time.perf_counter() - t)
            if resp.status != 200 or not body.strip().startswith(b"["):
                bad += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def get(port: int, path: str) -> bytes | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        return conn.getresponse().read()
    except OSError:
        return None


@contextmanager
def host_alone(with_plugin: HostProcess, log_path):
    """The host's own main class over the launcher's composed web root and classpath, on a port of its own."""
    port = free_port()
    with open(log_path, "ab") as out:
        runtime = with_plugin.runtime
        classpath = os.pathsep.join(map(str, (runtime.class_root, runtime.host_jar)))  # no bridge jar
        proc = subprocess.Popen([with_plugin.settings.host.java, "-cp", classpath, HOST_MAIN],
                                env={**os.environ, "PORT": str(port)}, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while get(port, "/getrecforyou?id=1&size=1&model=emb") is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the host alone did not start; see {log_path}")
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per configuration")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4, help="alternating blocks per configuration, against drift")
    args = ap.parse_args()
    with bench_host() as (settings, host), host_alone(host, settings.host.work_dir / "host-alone.log") as alone:
        summary = run_rerank(settings, "recent", progress=False)
        print(summary.line())
        store = open_default_store(settings)
        users = [u for u in range(1, 700) if store.get_record("recent", u)]
        rng = random.Random(7)
        sample = [rng.choice(users) for _ in range(args.requests)]
        configs = {"host alone": (alone, "emb"), "pass-through": (host.http_port, "emb"),  # name -> (port, model)
                   "stored list": (host.http_port, "recent")}
        paths = {name: [f"/getrecforyou?id={u}&size=32&model={model}" for u in sample]
                 for name, (_, model) in configs.items()}
        # The same answer where it must be: pass-through is the host's own body.
        probe = paths["host alone"][0]
        assert get(alone, probe) == get(host.http_port, probe), "pass-through changed the host's answer"
        assert len(json.loads(get(host.http_port, paths["stored list"][0]))) == 32
        for name, (port, _) in configs.items():  # warm-up
            load(port, paths[name][:200], args.concurrency)
        results = {name: ([], 0) for name in configs}
        block = args.requests // args.rounds
        for r in range(args.rounds):
            for name, (port, _) in configs.items():
                lat, err = load(port, paths[name][r * block:(r + 1) * block], args.concurrency)
                results[name] = (results[name][0] + lat, results[name][1] + err)
    print(f"{args.requests} requests per configuration at concurrency {args.concurrency}, {len(set(sample))} users; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, (lat, err) in results.items():
        print(f"{name:13s} p50 {pct(lat, 50):7.2f} ms  p99 {pct(lat, 99):7.2f} ms  errors {err}")
    base, base_errors = results["host alone"]
    for name in ("pass-through", "stored list"):
        lat, err = results[name]
        r50, r99 = pct(lat, 50) / pct(base, 50), pct(lat, 99) / pct(base, 99)
        ok = r50 <= P50_RATIO and r99 <= P99_RATIO and err == base_errors == 0
        print(f"{'PASS' if ok else 'FAIL'}: {name} / host alone: p50 {r50:.2f} (<= {P50_RATIO}), "
              f"p99 {r99:.2f} (<= {P99_RATIO}), errors {err}")


if __name__ == "__main__":
    main()
