"""ClickPrompt scoring throughput (issue 12): users per second for the host's ~760 candidates per user.

Two paths over the same users, contexts and checkpoint, in one run:

  per-user   `ClickPromptScorer.score` one user at a time: the user's samples built in pandas (the user's history
             features recomputed for every candidate), encoded, scored (what `rank` did before batching)
  batched    `ClickPromptRanker.rank_many` over bulk batches of users (`--batch`, the bridge's batch size):
             each user's features once, each movie's once per batch, one model pass per batch, then the
             rankings

Contexts are built here, not fetched from a host: every user of the data folder with the host's candidates
(every movie it loads, i.e. movies.csv lines without a comma in the title), each batch with a movies dict of
its own, as the bridge hands them over. Torch runs on `--threads` (1). The checkpoint is `--checkpoint`, else a
CTR model of the serving recipe's architecture trained for a few steps (speed does not depend on the weights). The
batched scores of the per-user users must equal the per-user scores within 1e-6.

    python bench/bench_clickprompt_scoring.py [--checkpoint DIR] [--users N] [--per-user-users 40]
        [--batch 64] [--threads 1] [--target 50]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import host_movies
from sparrow_llm.config import Settings
from sparrow_llm.datafolder import read_data_folder
from sparrow_llm.domain import UserContext, UserRating
from sparrow_llm.rankers.clickprompt.checkpoint import RECIPES
from sparrow_llm.rankers.clickprompt.configuration import ClickPromptConfig
from sparrow_llm.rankers.clickprompt.ranker import ClickPromptRanker
from sparrow_llm.rankers.clickprompt.train import TrainOptions, finetune, prepare_data

TOLERANCE = 1e-6


def parse_args(argv=None) -> argparse.Namespace:
    settings = Settings.from_env()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=settings.host.data_webroot, help="a host-layout data folder")
    ap.add_argument("--checkpoint", type=Path, help="a ctr or prefix_add checkpoint (default: train a quick one)")
    ap.add_argument("--users", type=int, help="users of the batched path (default: all)")
    ap.add_argument("--per-user-users", type=int, default=40, help="users of the per-user path (default: 40)")
    ap.add_argument("--batch", type=int, default=settings.bridge.batch_users, help="users per batch")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    ap.add_argument("--target", type=float, default=50.0, help="users/s the batched path must reach (default: 50)")
    return ap.parse_args(argv)


def quick_checkpoint(data: Path, out: Path) -> Path:
    """The serving recipe's CTR model, trained for a few steps on the data folder's samples."""
    ratings, movies = read_data_folder(data)
    config = ClickPromptConfig(fusion="ctr", backbone=RECIPES[True].backbone)
    prepared = prepare_data(ratings, movies, config)
    return finetune(config, prepared, out, TrainOptions(epochs=1, max_steps_per_epoch=30, progress=False)).checkpoint


def contexts(data: Path, limit: int | None) -> list[UserContext]:
    """Every user (or the first `limit`) with the host's candidates, oldest rating first."""
    ratings, _ = read_data_folder(data)
    movies = host_movies(data)
    candidates = tuple(sorted(movies))
    ratings = ratings.sort_values(["userId", "timestamp"], kind="stable")
    out = []
    for user, rows in ratings.groupby("userId", sort=True):
        history = tuple(UserRating(int(m), float(r), int(t)) for m, r, t in
                        rows[["movieId", "rating", "timestamp"]].to_numpy())
        out.append(UserContext(int(user), history, candidates, movies))
    return out[:limit]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-cp-scoring-") as tmp:
        checkpoint = args.checkpoint or quick_checkpoint(args.data, Path(tmp) / "ctr")
        # Scores are the click probabilities alone (no fusion with the candidates' order, a few µs a user), so
        # that they compare with the per-user path's.
        ranker = ClickPromptRanker(checkpoint, order_weight=1.0)
        users = contexts(args.data, args.users)
        per_user = users[: args.per_user_users]

        started, cpu = time.perf_counter(), time.process_time()
        reference = {ctx.user_id: ranker.scorer.score(ctx.ratings, ctx.unrated_candidates(), ctx.movies,
                                                      user_id=ctx.user_id) for ctx in per_user}
        per_user_s, per_user_cpu = time.perf_counter() - started, time.process_time() - cpu

        rankings = []
        started, cpu = time.perf_counter(), time.process_time()
        for begin in range(0, len(users), args.batch):
            # A movies dict per batch, as each bulk fetch of the bridge hands over its own.
            movies = dict(users[0].movies)
            batch = [UserContext(c.user_id, c.ratings, c.candidate_ids, movies) for c in users[begin:begin + args.batch]]
            rankings += ranker.rank_many(batch)
        batched_s, batched_cpu = time.perf_counter() - started, time.process_time() - cpu

    worst = 0.0
    for ctx, ranking in zip(per_user, rankings):
        got = {item.movie_id: item.score for item in ranking.items}
        want = reference[ctx.user_id]
        worst = max(worst, float(np.max(np.abs(np.array([got[m] for m in ctx.unrated_candidates()]) - want))))
    n_candidates = np.mean([len(r.items) for r in rankings if r is not None])
    per_user_rate, batched_rate = len(per_user) / per_user_s, len(users) / batched_s
    # Stored scores are rounded to 6 decimals: up to 5e-7 of the difference is that rounding.
    same = worst <= TOLERANCE
    print(f"checkpoint {checkpoint}; {len(users)} users, {n_candidates:.0f} candidates per user on average; "
          f"torch threads {args.threads}, batches of {args.batch} users; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    # CPU seconds too: on a shared machine the wall clock also counts the time other processes held the core.
    print(f"per-user path: {len(per_user)} users in {per_user_s:.1f} s = {per_user_rate:.1f} users/s "
          f"({len(per_user) / per_user_cpu:.1f} users per CPU second)")
    print(f"batched path:  {len(users)} users in {batched_s:.1f} s = {batched_rate:.1f} users/s "
          f"({len(users) / batched_cpu:.1f} users per CPU second), {batched_rate / per_user_rate:.0f}x")
    print(f"batched == per-user within {TOLERANCE:g}: {'yes' if same else 'NO'} (max |diff| {worst:.2g})")
    passed = batched_rate >= args.target and same
    print(f"{'PASS' if passed else 'FAIL'}: ClickPrompt scoring >= {args.target:g} users/s "
          f"({batched_rate:.1f} users/s)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
