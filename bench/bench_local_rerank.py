"""Users reranked per second by `PalrRanker` with the `local` backend (MiniLM), on the fixture.

N fixture users (seeded, >= 20 ratings), each a `UserContext` built from the CSVs as the host
would serve it: the user's ratings oldest first, candidates in the host's `getMovies(800,
"rating")` order (average rating desc, rating count as tie-break). No store (every user is a
cache miss) and no stored profile (the backend's rule-based profile step runs per user).

  cold      a fresh backend: the first pass, its embedding cache empty
  warm      the same backend again, every movie text embedded already (the best of 3 passes)
  baseline  the same loop with the embedding cache disabled: each user's texts run through the model

The model is loaded and run once before any timing.

    python bench/bench_local_rerank.py [--users 100] [--baseline-users 100] [--seed 7]
"""
from __future__ import annotations

import argparse
import time

import torch
from bench_palr_tokens import load_fixture, sample_users, user_ratings

from sparrow_llm.config import LLMSettings
from sparrow_llm.rankers.llm.local_minilm import LocalMiniLMBackend
from sparrow_llm.rankers.palr.ranker import DEFAULT_K, DEFAULT_TOP_N, PalrRanker
from sparrow_llm.rankers.palr.prompts import Prompts
from sparrow_llm.domain import UserContext

HOST_CANDIDATES = 800  # the host's getMovies(800, "rating")
WARM_PASSES = 3  # the warm pass is short: the best of a few


def host_order(fixture) -> tuple[int, ...]:
    """Movies by average rating, most ratings first on a tie (then by id, to be deterministic)."""
    movies = sorted(fixture.movies.values(), key=lambda m: (-m.average_rating, -m.rating_number, m.movie_id))
    return tuple(m.movie_id for m in movies[:HOST_CANDIDATES])


def timed_pass(ranker: PalrRanker, contexts: list[UserContext]) -> tuple[float, list]:
    started = time.perf_counter()
    rankings = ranker.rank_many(contexts)
    return time.perf_counter() - started, rankings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--baseline-users", type=int, default=None, help="users of the baseline pass (default: all)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    fixture = load_fixture()
    candidates = host_order(fixture)
    users = sample_users(fixture, args.users, args.seed, min_ratings=20)
    contexts = [UserContext(u, user_ratings(fixture, u), candidates, fixture.movies) for u in users]
    baseline_contexts = contexts[: args.baseline_users or len(contexts)]
    prompts = Prompts.from_settings(LLMSettings())
    LocalMiniLMBackend(embedding_cache=0).vectors.lookup(["load the model"])  # weights and first-call costs, untimed

    cached = LocalMiniLMBackend()
    ranker = PalrRanker(cached, prompts, None, k=DEFAULT_K, top_n=DEFAULT_TOP_N)
    cold_s, cold = timed_pass(ranker, contexts)
    embedded_cold = cached.vectors.embedded
    warm_s, warm = min((timed_pass(ranker, contexts) for _ in range(WARM_PASSES)), key=lambda run: run[0])
    uncached = LocalMiniLMBackend(embedding_cache=0)
    base_s, base = timed_pass(PalrRanker(uncached, prompts, None, k=DEFAULT_K, top_n=DEFAULT_TOP_N),
                              baseline_contexts)

    parses = {r.meta["parse"] for r in cold + warm + base if r}
    same = sum(a.items == b.items for a, b in zip(base, cold))
    base_rate = len(baseline_contexts) / base_s

    def line(name: str, users: int, seconds: float, note: str) -> str:
        rate = users / seconds
        speed_up = "" if name == "baseline" else f"   speed-up x{rate / base_rate:.1f}"
        return f"{name:<9} {rate:8.1f} users/s  ({users} users in {seconds:.2f} s, {note}){speed_up}"

    print(f"local backend ({cached.name}) through PalrRanker.rank_many: {len(contexts)} fixture users (seed "
          f"{args.seed}), k={DEFAULT_K}, top_n={DEFAULT_TOP_N}, history_items={prompts.history_items}, no store, "
          f"torch threads {torch.get_num_threads()}, backend concurrency {cached.concurrency}")
    print(line("baseline", len(baseline_contexts), base_s,
               f"embedding cache disabled: {uncached.vectors.embedded} texts embedded, "
               f"{uncached.vectors.embedded / len(baseline_contexts):.0f} per user"))
    print(line("cold", len(contexts), cold_s, f"{embedded_cold} distinct movie texts embedded"))
    print(line("warm", len(contexts), warm_s, f"{cached.vectors.embedded - embedded_cold} texts embedded, "
                                              f"best of {WARM_PASSES} passes"))
    print(f"parse status: {', '.join(sorted(parses))}; rankings identical to the baseline's: "
          f"{same}/{len(baseline_contexts)}")


if __name__ == "__main__":
    main()
