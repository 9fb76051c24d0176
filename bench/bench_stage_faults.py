"""The stage under load while its Redis store is killed and restarted: 20 clients x 200 requests of
`/getrecforyou?model=recent`, the store killed a third of the way in and started again at two thirds.

Every answer is checked against what the fault contract allows: the stored order with
`X-Sparrow-LLM: recent; source=store`, or the host's own `emb` order with `source=host-fallback`.
It prints errors (non-200, transport errors: target 0), answers in neither order (target 0), and answers
not from the store once Redis has been back for `--grace` seconds (target 0: the pool recovered).

    python bench/bench_stage_faults.py [--clients 20] [--requests 200] [--grace 2]
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import tempfile
import threading
import time

import redis
from common import bench_host, free_port

from sparrow_llm.domain import served_order
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.schema import HOST_CANDIDATES
from sparrow_llm.store import open_default_store

SIZE = 32


def start_redis(port: int, data_dir: str) -> subprocess.Popen:
    """A redis-server whose data is the dump.rdb in `data_dir` (written by SAVE before the kill), as a
    restarted production Redis comes back with its data."""
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", data_dir], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(200):
        try:
            if client.ping():
                return proc
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def get(conn: http.client.HTTPConnection, user: int, model: str, size: int = SIZE) -> tuple[int, str, list[int]]:
    conn.request("GET", f"/getrecforyou?id={user}&size={size}&model={model}")
    resp = conn.getresponse()
    body = resp.read()
    ids = [m["movieId"] for m in json.loads(body)] if resp.status == 200 else []
    return resp.status, resp.headers.get("X-Sparrow-LLM", ""), ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=200, help="per client")
    ap.add_argument("--grace", type=float, default=2.0, help="seconds after the restart before answers must "
                                                             "come from the store again")
    ap.add_argument("--pause-s", type=float, default=0.03, help="between one client's requests")
    args = ap.parse_args()
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="sparrow-llm-redis-")
    redis_proc = start_redis(port, data_dir)
    with bench_host(kind="redis", redis_port=port) as (settings, host):
        print(run_rerank(settings, "recent", progress=False).line())
        store = open_default_store(settings)
        users = [u for u in range(1, 700) if store.get_record("recent", u)]
        conn = http.client.HTTPConnection("127.0.0.1", host.http_port, timeout=10)
        emb, stored = {}, {}
        for u in users:  # what each user may get: the stored order, or the host's own
            emb[u] = get(conn, u, "emb")[2]
            full = get(conn, u, "emb", size=HOST_CANDIDATES)[2]
            known = set(full)
            stored[u] = served_order((m for m in store.get_record("recent", u).movie_ids if m in known), full)[:SIZE]
        conn.close()
        total = args.clients * args.requests
        phase = {"state": "up", "back_at": None}
        tally = {"errors": 0, "wrong_order": 0, "fallback": 0, "store": 0, "not_store_after_recovery": 0}
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            conn = http.client.HTTPConnection("127.0.0.1", host.http_port, timeout=10)
            for _ in range(args.requests):
                user = rng.choice(users)
                try:
                    status, source, ids = get(conn, user, "recent")
                except (OSError, http.client.HTTPException, ValueError):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", host.http_port, timeout=10)
                    status, source, ids = -1, "", []
                recovered = phase["back_at"] is not None and time.monotonic() - phase["back_at"] > args.grace
                with lock:
                    if status != 200:
                        tally["errors"] += 1
                    elif source == "recent; source=store" and ids == stored[user]:
                        tally["store"] += 1
                    elif source == "recent; source=host-fallback" and ids == emb[user]:
                        tally["fallback"] += 1
                        tally["not_store_after_recovery"] += recovered
                    else:
                        tally["wrong_order"] += 1
                time.sleep(args.pause_s)
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        expected_s = args.requests * (args.pause_s + 0.005)
        time.sleep(expected_s / 3)
        redis.Redis(host="127.0.0.1", port=port).save()  # what a persistent Redis would have on disk
        redis_proc.kill()
        redis_proc.wait()
        killed_at = time.monotonic() - started
        time.sleep(expected_s / 3)
        redis_proc = start_redis(port, data_dir)
        phase["back_at"] = time.monotonic()
        back_at = phase["back_at"] - started
        for t in threads:
            t.join()
        wall = time.monotonic() - started
    redis_proc.kill()
    print(f"{total} requests from {args.clients} clients in {wall:.1f} s; Redis killed at {killed_at:.1f} s, "
          f"back at {back_at:.1f} s")
    print(f"from the store {tally['store']}, host fallback {tally['fallback']}, errors {tally['errors']}, "
          f"wrong order {tally['wrong_order']}, fallbacks {args.grace:g} s after recovery "
          f"{tally['not_store_after_recovery']}")
    ok = tally["errors"] == tally["wrong_order"] == tally["not_store_after_recovery"] == 0 and tally["fallback"] > 0
    print(f"targets: 0 errors, 0 wrong-order answers, 0 fallbacks after recovery: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
