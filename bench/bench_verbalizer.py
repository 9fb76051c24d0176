"""Seconds per user of the local model's verbalizer ranking (`PalrRanker` over `LocalLMBackend.score_options`),
K = 20 candidates, on the fixture. Target: at most 1 s per user.

N fixture users (seeded, >= 20 ratings), each ranked over the 20 most-rated movies they have not rated; no
store, so every user is a forward pass. Wall time and this process's CPU time per user, for each torch thread
count and batch size asked for (`local_batch`: users whose forward passes run together), with `passes` shuffled
passes. CPU time is what the load of other processes on a shared machine does not inflate.

    python bench/bench_verbalizer.py [--users 24] [--threads 1,2] [--batches 1,8] [--passes 1]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter

import torch
from bench_palr_tokens import load_fixture, sample_users, user_ratings

from sparrow_llm.config import Settings
from sparrow_llm.domain import UserContext
from sparrow_llm.rankers.llm.local_lm import LocalLMBackend
from sparrow_llm.rankers.palr.prompts import Prompts
from sparrow_llm.rankers.palr.ranker import PalrRanker

K = 20
TARGET_S = 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=24)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    settings = Settings.from_env()
    fixture = load_fixture()
    popular = [m for m, _ in Counter(fixture.ratings["movieId"]).most_common() if m in fixture.movies]
    contexts = []
    for user in sample_users(fixture, args.users, args.seed, min_ratings=20):
        ratings = user_ratings(fixture, user)
        rated = {r.movie_id for r in ratings}
        contexts.append(UserContext(user, ratings, tuple(m for m in popular if m not in rated)[:K], fixture.movies))
    prompts = Prompts.from_settings(settings.llm)
    print(f"verbalizer ranking, {len(contexts)} users, K={K}, {args.passes} pass(es), no cache; target <= {TARGET_S} s/user")
    for threads in (int(t) for t in args.threads.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            llm = LocalLMBackend(dataclasses.replace(settings.llm, local_threads=threads, local_batch=batch))
            llm.loaded()
            torch.set_num_threads(threads)
            ranker = PalrRanker(llm, prompts, None, choice_k=K, passes=args.passes)
            ranker.rank_many(contexts[:2])  # warm-up
            wall, cpu = time.perf_counter(), time.process_time()
            rankings = ranker.rank_many(contexts)
            wall, cpu = (time.perf_counter() - wall) / len(contexts), (time.process_time() - cpu) / len(contexts)
            tokens = sum(r.meta["prompt_tokens"] for r in rankings) / len(contexts)
            print(f"threads {threads}, batch {batch}: {wall:.2f} s/user wall, {cpu:.2f} s/user CPU, {tokens:.0f} prompt "
                  f"tokens/user  {'PASS' if wall <= TARGET_S else 'FAIL'} (wall)")
            llm.close()


if __name__ == "__main__":
    main()
