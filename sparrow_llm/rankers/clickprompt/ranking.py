"""ClickPrompt trained to rank: implicit feedback, where "rated" is the click.

The rating-label task (`samples.build_samples`, label = rating >= 3.5) learns which rated movies are good; a
ranker must learn which movie this user picks next among all the others. So every rating is a positive
(label 1, its features as `build_samples` computes them), and each draws `negatives` movies the user had not
rated by then (label 0), scored with the same features as of the positive's time: the user's history before
it, the movie's statistics before it. Negatives are drawn, seeded, with probability proportional to
(ratings of the movie + 1) ** `alpha` (counted over the training ratings): `alpha` 0 is uniform over the
catalogue (easy negatives: the model can learn mostly popularity), 1 follows popularity (a popular movie must
beat other popular movies on this user's features).

Validation is the evaluation's protocol inside the training data (`datafolder.leave_last_out`): each user's
last liked rating is held out (with everything the user rated from that second on), the model trains on the
rest, and it is early-stopped on NDCG@10 of the held-out movie among every catalogue movie the user had not
rated (`RankingValidation`), as the ranker ranks them (a tie by `metrics`' rule: the ranker's order). Users
rate in sessions, so a split by time would validate almost only on users without a history (15 of 123 on the
fixture have one).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...catalog import movie_catalog
from ...datafolder import MIN_HISTORY, leave_last_out
from ...metrics import mean_ndcg_of_scores
from .features import encode_samples
from .model import ClickPrompt, ClickPromptConfig, load_tokenizer, plm_path
from .samples import Split, build_samples, history_frame, movie_stats_now, samples_at
from .schema import COL_LABEL, COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER, SAMPLE_COLUMNS
from .score import ClickPromptScorer
from .train import PreparedData, evaluate, prepare_split

__all__ = ["NegativeSampling", "draw_negatives", "ranking_samples", "RankingData", "RankingValidation",
           "prepare_ranking_data", "with_text"]

_MAX_REDRAWS = 50  # a user who rated nearly every movie keeps fewer negatives rather than loop
_TOP_K = 10


@dataclass(frozen=True)
class NegativeSampling:
    negatives: int = 4  # drawn per positive
    alpha: float = 0.5  # popularity exponent of the draw
    seed: int = 2024

    def __post_init__(self) -> None:
        if self.negatives < 1 or self.alpha < 0:
            raise ValueError(f"negatives must be >= 1 and alpha >= 0, got {self.negatives}, {self.alpha}")


def draw_negatives(positives: pd.DataFrame, rated: pd.DataFrame, movie_ids: np.ndarray,
                   sampling: NegativeSampling) -> pd.DataFrame:
    """userId, movieId, timestamp of `sampling.negatives` draws per row of `positives` (userId, timestamp) from
    `movie_ids`, each a movie the user had not rated (in `rated`) at or before the row's time."""
    rated = history_frame(rated)
    movie_ids = np.unique(np.asarray(movie_ids, dtype=np.int64))
    if len(movie_ids) == 0:
        raise ValueError("no movies to draw negatives from")
    counts = rated[COL_MOVIE].value_counts().reindex(movie_ids, fill_value=0).to_numpy(dtype=np.float64)
    weights = (counts + 1.0) ** sampling.alpha
    users = np.repeat(positives[COL_USER].to_numpy(dtype=np.int64), sampling.negatives)
    ts = np.repeat(positives[COL_TIMESTAMP].to_numpy(dtype=np.int64), sampling.negatives)
    # When each user first rated each movie: a draw is taken when the pair is absent or rated after `ts`.
    first = rated.groupby([COL_USER, COL_MOVIE])[COL_TIMESTAMP].min()
    rng = np.random.default_rng(sampling.seed)
    drawn = np.zeros(len(users), dtype=np.int64)
    todo = np.arange(len(users))
    for _ in range(_MAX_REDRAWS):
        if len(todo) == 0:
            break
        drawn[todo] = movie_ids[rng.choice(len(movie_ids), size=len(todo), p=weights / weights.sum())]
        seen = first.reindex(pd.MultiIndex.from_arrays([users[todo], drawn[todo]])).to_numpy(dtype=np.float64)
        todo = todo[~(np.isnan(seen) | (seen > ts[todo]))]
    keep = np.ones(len(users), dtype=bool)
    keep[todo] = False
    return pd.DataFrame({COL_USER: users[keep], COL_MOVIE: drawn[keep], COL_TIMESTAMP: ts[keep]})


def ranking_samples(ratings: pd.DataFrame, movies: pd.DataFrame, sampling: NegativeSampling,
                    positives: pd.DataFrame | None = None) -> pd.DataFrame:
    """Clicks (label 1) and their drawn non-clicks (label 0, rating missing) from the movies of `movies`, in the
    host's columns, every feature from `ratings` strictly before each sample's time, sorted by (timestamp,
    userId, label, movieId). The clicks are `ratings` themselves, or `positives` (ratings held out of them)."""
    if positives is None:
        clicks = build_samples(ratings, movies)
        rated = ratings
    else:
        clicks = samples_at(ratings, positives[COL_USER].to_numpy(), positives[COL_MOVIE].to_numpy(),
                            positives[COL_TIMESTAMP].to_numpy(), movie_catalog(movies))
        clicks[COL_RATING] = positives[COL_RATING].to_numpy(dtype=np.float64)
        rated = pd.concat([history_frame(ratings), history_frame(positives)], ignore_index=True)
    drawn = draw_negatives(rated if positives is None else positives, rated, movies[COL_MOVIE].to_numpy(), sampling)
    negatives = samples_at(ratings, drawn[COL_USER].to_numpy(), drawn[COL_MOVIE].to_numpy(),
                           drawn[COL_TIMESTAMP].to_numpy(), movie_catalog(movies))
    samples = pd.concat([clicks.assign(**{COL_LABEL: 1}), negatives.assign(**{COL_LABEL: 0})], ignore_index=True)
    samples[COL_LABEL] = samples[COL_LABEL].astype("Int64")
    order = samples.sort_values([COL_TIMESTAMP, COL_USER, COL_LABEL, COL_MOVIE], ascending=[True, True, False, True],
                                kind="stable").index
    return samples.loc[order, list(SAMPLE_COLUMNS)].reset_index(drop=True)


class RankingValidation:
    """NDCG@10 of each held-out movie among every movie of `movies` its user had not rated in `history`, the
    user's features from `history`, the movies' statistics over it: how the ranker would rank them.
    Called with a model (in eval mode), it returns `valid_ndcg` and the early-stopping `score` (the same)."""

    def __init__(self, history: pd.DataFrame, held_out: pd.DataFrame, movies: pd.DataFrame):
        history = history_frame(history)
        self.movies = movies
        self.movie_stats = movie_stats_now(history)
        catalogue = np.unique(movies[COL_MOVIE].to_numpy(dtype=np.int64))
        by_user = dict(tuple(history.groupby(COL_USER)))
        self.queries, self.targets = [], []
        for user, movie in zip(held_out[COL_USER].to_numpy(), held_out[COL_MOVIE].to_numpy()):
            rows = by_user.get(user, history.iloc[:0])
            candidates = np.setdiff1d(catalogue, rows[COL_MOVIE].to_numpy())
            if movie in candidates:  # a held-out movie outside the catalogue cannot be ranked
                self.queries.append((int(user), rows, candidates.tolist()))
                self.targets.append(int(movie))

    def __call__(self, model: ClickPrompt) -> dict[str, float]:
        scorer = ClickPromptScorer.for_model(model, self.movie_stats)
        rows = list(scorer.score_many(self.queries, self.movies))
        targets = [candidates.index(target) for (_, _, candidates), target in zip(self.queries, self.targets)]
        ndcg = mean_ndcg_of_scores(rows, targets, _TOP_K)
        return {"valid_ndcg": ndcg, "score": ndcg}


@dataclass(frozen=True)
class RankingData:
    """Training clicks and non-clicks (`data.train`), the held-out clicks with theirs (`data.valid`, for AUC and
    PA-MLM's validation), and the held-out clicks' ranking validation."""

    data: PreparedData
    validation: RankingValidation

    def validate(self, model: ClickPrompt) -> dict[str, Any]:
        return {**self.validation(model), "valid_auc": evaluate(model, self.data.valid).auc}


def prepare_ranking_data(ratings: pd.DataFrame, movies: pd.DataFrame, sampling: NegativeSampling,
                         config: ClickPromptConfig = ClickPromptConfig(), *, n_buckets: int = 10) -> RankingData:
    """Ratings split by `datafolder.leave_last_out` (held out: users with >= `MIN_HISTORY` ratings left), ranking
    samples of both parts, prepared like the rating task's data (`prepare_split`) without text (the CTR
    fine-tune does not read it; `with_text` adds it to the rows PA-MLM reads). The serving snapshot of movie
    statistics covers all of `ratings`."""
    kept, holdouts = leave_last_out(ratings)
    held = pd.DataFrame([(h.user_id, h.movie_id, h.timestamp) for h in holdouts.values()
                         if h.history_size >= MIN_HISTORY], columns=[COL_USER, COL_MOVIE, COL_TIMESTAMP])
    held = held.merge(history_frame(ratings), on=[COL_USER, COL_MOVIE, COL_TIMESTAMP])
    if held.empty:
        raise ValueError(f"no user has a liked rating after {MIN_HISTORY} others: nothing to validate on")
    train = ranking_samples(kept, movies, sampling)
    valid = ranking_samples(kept, movies, dataclasses.replace(sampling, seed=sampling.seed + 1), positives=held)
    ts = valid[COL_TIMESTAMP].to_numpy(dtype=np.int64)
    split = Split(train, valid, valid.iloc[:0], int(ts.min()), int(ts.max()) + 1)
    prepared = prepare_split(split, movies, movie_stats_now(ratings), config, n_buckets=n_buckets, text=False)
    return RankingData(prepared, RankingValidation(kept, held, movies))


def with_text(data: PreparedData, config: ClickPromptConfig, train_rows: int | None, valid_rows: int | None,
              seed: int) -> PreparedData:
    """A seeded random `train_rows` / `valid_rows` (None: all) of `data`'s train and valid samples, encoded with
    their text: a short PA-MLM reads a few thousand samples, and tokenizing all ~100k costs more than it."""
    rng = np.random.default_rng(seed)
    parts = []
    for frame, rows in ((data.split.train, train_rows), (data.split.valid, valid_rows)):
        if rows is not None and rows < len(frame):
            frame = frame.iloc[np.sort(rng.choice(len(frame), rows, replace=False))].reset_index(drop=True)
        parts.append(encode_samples(frame, data.space, data.catalog, load_tokenizer(plm_path(config)),
                                    config.max_text_len))
    return dataclasses.replace(data, train=parts[0], valid=parts[1])
