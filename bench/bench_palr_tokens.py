"""Tokens of PALR's prompts and of real answers, counted by the serving model's own tokenizer, on the fixture.

For `--users` seeded users with >= 50 ratings: the history is their last 50 ratings, the candidates the 50
most-rated movies they have not rated, top_n = 20. Every count is SmolLM2-135M-Instruct's (the `local`
backend's model; the chat template included, as the model reads it):
  * input: the compact rank prompt (the current template) vs the naive PALR prompt (full rows, ids and
    titles, a free-text answer); target <= 0.5;
  * output: answers the local model really generates for each (greedy, batched), their completion tokens and
    how they parse (`parse_ranking`: ok / repaired / fallback); target <= 0.3 and parse ok >= 90%. The compact
    answer is held to its format (`IndexList`, token by token) and stops at its end (`]`) under the cap its format
    sizes; the naive one, free text with no end to stop at,
    gets the budget of a title and a reason per pick (`NAIVE_TOKENS_PER_PICK`);
  * the choose prompt the local model ranks with (20 lettered candidates, 10 liked movies): input tokens,
    and no output at all (one forward pass reads the letters' logits).

The reasons the local model writes (`--reasons N`: only this): N seeded users (>= 20 ratings), each ranked by
PALR at fusion weight 0 (the base's order: the 20 most-rated movies they have not rated) with the local model's
reasons for the top 10, in one generation per user (batched across users as in serving): seconds per user,
the share of the top 10s' reasons the model wrote, the reasons the check replaced, the share of reasons that
repeat another of the same list, and every reason checked again (0 false).

    python bench/bench_palr_tokens.py [--users 8] [--seed 7]
    python bench/bench_palr_tokens.py --reasons 20
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sparrow_llm.domain import MovieMeta, UserContext, UserRating
from sparrow_llm.config import Settings
from sparrow_llm.rankers.llm.local_lm import LocalLMBackend
from sparrow_llm.rankers.palr.parsing import PARSE_FALLBACK, PARSE_OK, PARSE_REPAIRED, parse_ranking
from sparrow_llm.rankers.palr.prompts import Prompts, Rated, naive_rank_prompt
from sparrow_llm.rankers.palr.ranker import DEFAULT_REASONS, PalrRanker
from sparrow_llm.rankers.palr.reasons import ReasonChecker
from sparrow_llm.schema import COL_GENRES, COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_TITLE, COL_USER, MOVIES_CSV, RATINGS_CSV

HISTORY, CANDIDATES, TOP_N, CHOICE_K = 50, 50, 20, 20
INPUT_TARGET, OUTPUT_TARGET, PARSE_OK_TARGET = 0.5, 0.3, 0.9
NAIVE_TOKENS_PER_PICK = 18  # a title and a four-word reason: the compact answer's budget before it had an end
_TITLE_WITH_YEAR = re.compile(r"(.*)\((\d{4})\)\s*")  # the host's DataManager.TITLE_WITH_YEAR
_NO_GENRES = "(no genres listed)"


@dataclass(frozen=True)
class Fixture:
    movies: dict[int, MovieMeta]  # with the average rating and count over ratings.csv, as the host has them
    ratings: pd.DataFrame  # userId, movieId, rating, timestamp; each user's rows oldest first


def load_fixture(webroot: Path | None = None) -> Fixture:
    """movies.csv (quoted titles with commas parsed properly) and ratings.csv of the host's data folder
    (the fixture, or SPARROW_LLM_DATA_DIR), with the movies' rating statistics as the host computes them."""
    webroot = webroot or Settings.from_env().host.data_webroot
    movies = pd.read_csv(webroot / MOVIES_CSV, dtype={COL_MOVIE: "int64", COL_TITLE: str, COL_GENRES: str})
    ratings = pd.read_csv(webroot / RATINGS_CSV)
    # Stable sort: a user's rows with the same timestamp keep the file's order.
    ratings = ratings.sort_values([COL_USER, COL_TIMESTAMP], kind="stable").reset_index(drop=True)
    stats = ratings.groupby(COL_MOVIE)[COL_RATING].agg(["mean", "size"])
    metas = {}
    for movie_id, title, genres in movies[[COL_MOVIE, COL_TITLE, COL_GENRES]].itertuples(index=False):
        title = str(title).strip()
        match = _TITLE_WITH_YEAR.fullmatch(title)
        name, year = (match.group(1).strip(), int(match.group(2))) if match else (title, 0)
        names = tuple(g for g in str(genres).split("|") if g and g != _NO_GENRES) if isinstance(genres, str) else ()
        mean, size = (stats.at[movie_id, "mean"], stats.at[movie_id, "size"]) if movie_id in stats.index else (0.0, 0)
        metas[int(movie_id)] = MovieMeta(int(movie_id), name, year, names, float(mean), int(size))
    return Fixture(metas, ratings)


def user_ratings(fixture: Fixture, user_id: int) -> tuple[UserRating, ...]:
    rows = fixture.ratings[fixture.ratings[COL_USER] == user_id]
    return tuple(UserRating(int(m), float(r), int(t))
                 for m, r, t in rows[[COL_MOVIE, COL_RATING, COL_TIMESTAMP]].itertuples(index=False))


def sample_users(fixture: Fixture, n: int, seed: int, min_ratings: int = HISTORY) -> list[int]:
    counts = fixture.ratings.groupby(COL_USER).size()
    eligible = np.sort(counts[counts >= min_ratings].index.to_numpy())
    chosen = np.random.default_rng(seed).choice(eligible, size=min(n, len(eligible)), replace=False)
    return sorted(int(u) for u in chosen)


# ---- the bench ----------------------------------------------------------------------------------

def _line(name: str, compact: list[int], naive: list[int], target: float | None) -> str:
    ratio = statistics.median(compact) / statistics.median(naive)
    verdict = "" if target is None else f"  {'PASS' if ratio <= target else 'FAIL'} (target <= {target})"
    return (f"{name:<16} compact median {statistics.median(compact):7.1f} mean {statistics.fmean(compact):7.1f} | "
            f"naive median {statistics.median(naive):7.1f} mean {statistics.fmean(naive):7.1f} | ratio of medians "
            f"{ratio:.3f}, of means {statistics.fmean(compact) / statistics.fmean(naive):.3f}{verdict}")


def _parses(answers, labels, target: float | None = None) -> str:
    counts = Counter(parse_ranking(a.text, l).status for a, l in zip(answers, labels))
    picks = [len(parse_ranking(a.text, l).indexes) for a, l in zip(answers, labels)]
    share = counts.get(PARSE_OK, 0) / len(answers)
    verdict = "" if target is None else f"  {'PASS' if share >= target else 'FAIL'} (target ok >= {target:.0%})"
    return (", ".join(f"{k} {counts.get(k, 0)}" for k in (PARSE_OK, PARSE_REPAIRED, PARSE_FALLBACK))
            + f" (ok {share:.0%}); picks per answer: mean {statistics.fmean(picks):.1f}{verdict}")


def bench_reasons(fixture: Fixture, llm: LocalLMBackend, prompts: Prompts, most_rated: list[int], n: int,
                  seed: int) -> None:
    contexts = []
    for user_id in sample_users(fixture, n, seed, min_ratings=20):
        rated = user_ratings(fixture, user_id)
        seen = {r.movie_id for r in rated}
        contexts.append(UserContext(user_id, rated, tuple(m for m in most_rated if m not in seen)[:20], fixture.movies))
    ranker = PalrRanker(llm, prompts, None, weight=0.0)
    llm.loaded()
    started = time.perf_counter()
    rankings = ranker.rank_many(contexts)
    elapsed = time.perf_counter() - started
    shown = written = replaced = repeated = false = 0
    for ctx, ranking in zip(contexts, rankings):
        top = [i.reason for i in ranking.items[:DEFAULT_REASONS]]
        checker = ReasonChecker([Rated(fixture.movies[r.movie_id], r.rating) for r in ctx.ratings], fixture.movies)
        false += sum(not checker.true(i.reason, fixture.movies[i.movie_id]) for i in ranking.items[:DEFAULT_REASONS])
        shown, repeated = shown + len(top), repeated + sum(top.count(r) > 1 for r in top)
        written, replaced = written + ranking.meta["reasons_model"], replaced + ranking.meta["reasons_replaced"]
    tokens = sum(r.meta["completion_tokens"] for r in rankings)
    print(f"reasons of {llm.model}: {len(contexts)} users (seed {seed}), top {DEFAULT_REASONS} each, one generation "
          f"per user batched {llm.settings.local_batch} users at a time: {elapsed / len(contexts):.2f} s per user "
          f"({elapsed:.0f} s), {tokens / len(contexts):.0f} completion tokens per user")
    print(f"  written by the model {written / shown:.0%} ({written} of {shown}); replaced as false {replaced}; "
          f"repeating another of the list {repeated / shown:.0%}; false after the check {false}")
    for ctx, ranking in list(zip(contexts, rankings))[:2]:
        print(f"  user {ctx.user_id}: " + " | ".join(i.reason for i in ranking.items[:DEFAULT_REASONS]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--reasons", type=int, default=0, help="measure the reasons of this many users instead")
    args = ap.parse_args()
    started = time.perf_counter()
    settings = Settings.from_env()
    fixture = load_fixture()
    llm = LocalLMBackend(settings.llm)
    tokenizer = llm.loaded().tokenizer
    prompts = Prompts.from_settings(dataclasses.replace(settings.llm, history_items=HISTORY))
    popularity = Counter(fixture.ratings[COL_MOVIE].to_list())
    most_rated = [m for m, _ in sorted(popularity.items(), key=lambda kv: (-kv[1], kv[0])) if m in fixture.movies]
    if args.reasons:
        bench_reasons(fixture, llm, prompts, most_rated, args.reasons, args.seed)
        return

    def tokens(messages) -> int:
        return len(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])

    users = sample_users(fixture, args.users, args.seed)
    compact, naive, choose, labels = [], [], [], []
    for user_id in users:
        rated = user_ratings(fixture, user_id)
        history = [Rated(fixture.movies[r.movie_id], r.rating) for r in rated[-HISTORY:]]
        seen = {r.movie_id for r in rated}
        candidates = [fixture.movies[m] for m in most_rated if m not in seen][:CANDIDATES]
        request = prompts.rank_request(history, candidates, "-", TOP_N)
        compact.append(request)
        naive.append(dataclasses.replace(request, messages=tuple(naive_rank_prompt(history, candidates, "-", TOP_N)),
                                         max_tokens=TOP_N * NAIVE_TOKENS_PER_PICK + 16, stop="", prefill="",
                                         answer=None))  # free text, as the naive PALR prompt asks
        choose.append(prompts.choose_request(history, candidates[:CHOICE_K]))
        labels.append(request.labels)
    generated = time.perf_counter()
    with ThreadPoolExecutor(max_workers=llm.concurrency) as pool:  # the backend batches them
        compact_out = list(pool.map(llm.rank, compact))
        naive_out = list(pool.map(llm.rank, naive))
    generated = time.perf_counter() - generated

    print(f"PALR tokens, template {prompts.version}: {len(users)} users (seed {args.seed}, >= {HISTORY} ratings), last "
          f"{HISTORY} ratings, the {CANDIDATES} most-rated unrated movies as candidates, top_n={TOP_N}")
    print(f"tokenizer and answers: {llm.model} (the local backend; chat template included), greedy, at most "
          f"{compact[0].max_tokens} (compact, stopping at its end) and {naive[0].max_tokens} (naive) new tokens per "
          f"answer; {generated:.0f} s to generate {2 * len(users)} answers")
    print(_line("input (prompt)", [tokens(r.messages) for r in compact], [tokens(r.messages) for r in naive],
                INPUT_TARGET))
    print(_line("output (answer)", [a.completion_tokens for a in compact_out], [a.completion_tokens for a in naive_out],
                OUTPUT_TARGET))
    print(f"parse, compact answers: {_parses(compact_out, labels, PARSE_OK_TARGET)}")
    print(f"parse, naive answers:   {_parses(naive_out, labels)}")
    print(f"choose prompt (the local model's ranking, {CHOICE_K} candidates): input median "
          f"{statistics.median(tokens(r.messages) for r in choose):.0f} tokens, output 0 (one forward pass)")
    print(f"done in {time.perf_counter() - started:.1f} s")
    sys.exit(0)


if __name__ == "__main__":
    main()
