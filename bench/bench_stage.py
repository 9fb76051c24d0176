"""Stage overhead: `/getrecforyou?model=recent` (through the rerank stage, from the store) vs the
host's `model=emb` for the same users, under a loopback load. Targets: p50 ratio <= 1.2,
p99 ratio <= 1.5, zero errors.

    python bench/bench_stage.py [--requests 2000] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import threading
import time

from common import bench_host, pct

from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.store import open_default_store


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4, help="alternating blocks per model, against drift")
    args = ap.parse_args()
    with bench_host() as (settings, host):
        summary = run_rerank(settings, "recent", progress=False)
        print(summary.line())
        store = open_default_store(settings)
        users = [u for u in range(1, 700) if store.get_record("recent", u)]
        rng = random.Random(7)
        sample = [rng.choice(users) for _ in range(args.requests)]
        paths = {m: [f"/getrecforyou?id={u}&size=32&model={m}" for u in sample] for m in ("emb", "recent")}
        # Same body shape check once: the stage answers with the host's JSON.
        conn = http.client.HTTPConnection("127.0.0.1", host.http_port)
        conn.request("GET", paths["recent"][0])
        assert len(json.loads(conn.getresponse().read())) == 32
        load(host.http_port, paths["emb"][:200] + paths["recent"][:200], args.concurrency)  # warm-up
        results = {"emb": ([], 0), "recent": ([], 0)}
        block = args.requests // args.rounds
        for r in range(args.rounds):
            for model in ("emb", "recent"):
                lat, err = load(host.http_port, paths[model][r * block:(r + 1) * block], args.concurrency)
                results[model] = (results[model][0] + lat, results[model][1] + err)
    print(f"{args.requests} requests per model at concurrency {args.concurrency}, {len(set(sample))} users")
    for model, (lat, err) in results.items():
        print(f"model={model:7s} p50 {pct(lat, 50):7.2f} ms  p99 {pct(lat, 99):7.2f} ms  errors {err}")
    (emb, e1), (rec, e2) = results["emb"], results["recent"]
    r50, r99 = pct(rec, 50) / pct(emb, 50), pct(rec, 99) / pct(emb, 99)
    ok = r50 <= 1.2 and r99 <= 1.5 and e1 == e2 == 0
    print(f"ratio recent/emb: p50 {r50:.2f} (<= 1.2), p99 {r99:.2f} (<= 1.5): {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
