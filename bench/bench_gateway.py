"""Recall over the gateway: one user's 800 candidates with metadata, in one bulk call vs walking the
same Java objects through Py4J getter by getter. Targets: bulk >= 20x faster, p50 < 10 ms.

    python bench/bench_gateway.py [--repeats 30]
"""
from __future__ import annotations

import argparse
import time

from common import bench_host, pct

from sparrow_llm.bridge.client import BridgeClient


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
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--user", type=int, default=1)
    ap.add_argument("--size", type=int, default=800)
    args = ap.parse_args()
    with bench_host() as (settings, host), BridgeClient(settings.bridge) as client:
        bulk = client.candidates(args.user, "host", args.size)
        walked = per_getter(client.jvm, args.user, args.size)
        assert [m.movie_id for m in bulk.movies] == [m["movieId"] for m in walked], "the two paths disagree"
        n = len(bulk.movies)
        for _ in range(5):  # warm the JIT on both paths
            client.candidates(args.user, "host", args.size)
        bulk_s, getter_s = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            client.candidates(args.user, "host", args.size)
            bulk_s.append(time.perf_counter() - t)
        for _ in range(max(3, args.repeats // 10)):
            t = time.perf_counter()
            per_getter(client.jvm, args.user, args.size)
            getter_s.append(time.perf_counter() - t)
    print(f"candidates with metadata for user {args.user}: {n} movies")
    print(f"bulk call      p50 {pct(bulk_s, 50):8.2f} ms  p90 {pct(bulk_s, 90):8.2f} ms  ({len(bulk_s)} runs)")
    print(f"per getter     p50 {pct(getter_s, 50):8.2f} ms  p90 {pct(getter_s, 90):8.2f} ms  ({len(getter_s)} runs)")
    ratio = pct(getter_s, 50) / pct(bulk_s, 50)
    print(f"speed-up (p50) {ratio:8.1f}x   target >= 20x: {'PASS' if ratio >= 20 else 'FAIL'}; "
          f"bulk p50 < 10 ms: {'PASS' if pct(bulk_s, 50) < 10 else 'FAIL'}")


if __name__ == "__main__":
    main()
