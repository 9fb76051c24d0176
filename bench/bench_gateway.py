"""Recall over the gateway: one user's 800 candidates with metadata, in one bulk call vs walking the
same Java objects through Py4J getter by getter (the baseline), both in this run. Targets: bulk >= 50x
faster than the walk, bulk p50 <= 3 ms (on a quiet machine: the load average is printed).

The bulk time is split into the entry point's call alone (Java's work and the transfer of its JSON) and
the client's decoding, to show where the time goes.

    python bench/bench_gateway.py [--repeats 200]
"""
from __future__ import annotations

import argparse
import os
import time

from common import bench_host, pct

from sparrow_llm.bridge.client import BridgeClient


SPEED_UP, P50_MS = 50.0, 3.0


def per_getter(jvm, user_id: int, size: int) -> list[dict]:
    """The naive way: one Py4J round trip per getter of every movie."""
    movies = jvm.com.sparrowrecsys.online.recprocess.RecForYouProcess.getRecList(user_id, size, "emb")
    out = []
    for movie in movies:
        out.append({"movieId": movie.getMovieId(), "title": movie.getTitle(),
                    "releaseYear": movie.getReleaseYear(), "genres": list(movie.getGenres()),
                    "averageRating": movie.getAverageRating(), "ratingNumber": movie.getRatingNumber()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--user", type=int, default=1)
    ap.add_argument("--size", type=int, default=800)
    args = ap.parse_args()
    with bench_host() as (settings, host), BridgeClient(settings.bridge) as client:
        bulk = client.candidates(args.user, "host", args.size)
        walked = per_getter(client.jvm, args.user, args.size)
        assert [m.movie_id for m in bulk.movies] == [m["movieId"] for m in walked], "the two paths disagree"
        n = len(bulk.movies)
        for _ in range(50):  # warm the JIT (the host ranker's and the JSON writer's loops) before timing
            client.candidates(args.user, "host", args.size)
        entry = client._connected().entry_point  # the raw call, for the split only
        bulk_s, call_s, getter_s = [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            client.candidates(args.user, "host", args.size)
            bulk_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            entry.candidates(args.user, "host", args.size)
            call_s.append(time.perf_counter() - t)
        for _ in range(max(3, args.repeats // 40)):
            t = time.perf_counter()
            per_getter(client.jvm, args.user, args.size)
            getter_s.append(time.perf_counter() - t)
    print(f"candidates with metadata for user {args.user}: {n} movies; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"bulk call      p50 {pct(bulk_s, 50):8.2f} ms  p90 {pct(bulk_s, 90):8.2f} ms  ({len(bulk_s)} runs)")
    print(f"  of which the entry point's call (Java + transfer) p50 {pct(call_s, 50):.2f} ms; the rest is "
          f"the client's JSON decoding and MovieMetas")
    print(f"per getter     p50 {pct(getter_s, 50):8.2f} ms  p90 {pct(getter_s, 90):8.2f} ms  ({len(getter_s)} runs)")
    ratio = pct(getter_s, 50) / pct(bulk_s, 50)
    print(f"{'PASS' if ratio >= SPEED_UP else 'FAIL'}: speed-up (p50) {ratio:.1f}x (target >= {SPEED_UP:.0f}x)")
    print(f"{'PASS' if pct(bulk_s, 50) <= P50_MS else 'FAIL'}: bulk p50 {pct(bulk_s, 50):.2f} ms "
          f"(target <= {P50_MS:.0f} ms)")


if __name__ == "__main__":
    main()
