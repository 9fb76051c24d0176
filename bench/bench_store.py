"""Store: users written per second for all fixture users, file store and Redis, with records of
the real size (every candidate the `recent` ranker ranks, with reasons).

    python bench/bench_store.py
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_redis  # noqa: E402  (a real redis-server on a free port)

from sparrow_llm.config import StoreSettings  # noqa: E402
from sparrow_llm.domain import RankedItem, Record  # noqa: E402
from sparrow_llm.store import FileStore, RedisStore


def fixture_sized_records(users: int, items: int) -> list[Record]:
    return [Record("recent", u, tuple(RankedItem(m, 1.0 - m / items, f"close to Movie {m % 50}, which you liked")
                                     for m in range(items)), "item2vec", "bench") for u in range(1, users + 1)]


def timed(store, records, batch: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(records), batch):
        store.put_records(records[i:i + batch])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=603, help="fixture users")
    ap.add_argument("--items", type=int, default=700, help="items per record")
    ap.add_argument("--batch", type=int, default=64, help="users per write (the rerank batch)")
    args = ap.parse_args()
    records = fixture_sized_records(args.users, args.items)
    size_kb = len(records[0].to_json()) / 1024
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("file (fsync)", timed(FileStore(Path(tmp) / "a"), records, args.batch)))
        rows.append(("file (no fsync)", timed(FileStore(Path(tmp) / "b", fsync=False), records, args.batch)))
    server = start_redis()
    try:
        store = RedisStore(StoreSettings(kind="redis", redis_port=server.port))
        rows.append(("redis (MULTI/EXEC per batch)", timed(store, records, args.batch)))
        rows.append(("redis (one record per MULTI)", timed(store, records, 1)))
        store.close()
    finally:
        server.stop()
    print(f"{args.users} users, {args.items} items per record ({size_kb:.0f} KiB of JSON each)")
    base = rows[0][1]
    for name, secs in rows:
        print(f"{name:30s} {args.users / secs:8.0f} users/s   {base / secs:5.2f}x of file (fsync)")


if __name__ == "__main__":
    main()
