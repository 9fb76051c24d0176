"""Choice samples of a data folder, built by time: which movie did the user like next, among K?

The task the local model is fine-tuned on and its fusion weight is chosen on (LlamaRec's): a user's
history up to a moment, K candidates, and the movie the user liked next.

  * Spark reads the ratings and, per user in (timestamp, movieId) order, picks the targets: ratings >= 3.5
    with at least `MIN_PRIOR` earlier ratings; a target's history is every rating before its second.
  * The user's last target is a validation sample (every user's, or `valid_users` seeded users');
    training samples are the user's `train_per_user` latest earlier targets. So no training sample sees a
    validation target or anything rated at or after it, and the evaluation's copy of the data (hidden test
    ratings removed) gives samples with no test user's future in them.
  * Candidates, on the driver: the base ranker's top K for that history (what the pipeline gives the
    reranker when serving), with its scores. The base is trained for this on a copy of the data without
    the validation targets and anything their users rated from that second on (`base_folder`), so it
    proposes a validation target as it would an unseen movie at serving time (trained on the data folder
    itself, ease-recent had the target among its first 20 for 80% of the validation users: a base far
    stronger than it is on movies it has not seen). Without a base, the host's order (the cosine between the mean
    item2vec vector of the rated movies, which is how the host builds a user's vector, and each movie's).
    A training sample whose target is not among them gets it in place of the last one (LlamaRec trains on
    the retriever's lists with the target in), and its list is shuffled; a validation sample keeps the list
    in the base's order and says whether the target is in it.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from pyspark.sql import Row, SparkSession
from pyspark.sql.types import ArrayType, DoubleType, LongType, StringType, StructField, StructType

from ...config import Settings
from ...datafolder import cut_folder, data_key
from ...domain import MovieMeta, Rated, UserContext, UserRating
from ...schema import COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER, ITEM_EMB_CSV, LIKED_RATING, MOVIES_CSV, RATINGS_CSV
from ...spark import read_movies, read_ratings, session, task_progress
from ..base import Ranker
from .profiles import movie_metas, user_histories

__all__ = ["ChoiceSample", "SampleOptions", "build_samples", "target_rows", "base_folder", "item_vectors",
           "MIN_PRIOR", "TRAIN", "VALID"]

MIN_PRIOR = 5
TRAIN, VALID = "train", "valid"
_HISTORY_KEPT = 50  # rows of history a sample carries (the prompt shows fewer)
_BASE_BATCH = 256  # histories per call of the base ranker


@dataclass(frozen=True)
class SampleOptions:
    k: int = 20
    train_per_user: int = 4
    valid_users: int | None = None  # None: every user
    seed: int = 2024


@dataclass(frozen=True)
class ChoiceSample:
    user_id: int
    split: str
    target: int
    history: tuple[Rated, ...]  # oldest first
    candidates: tuple[MovieMeta, ...]  # the base's order (shuffled in training)
    target_in: bool  # whether the target is among the candidates (always, in training)
    base_scores: tuple[float, ...] | None = None  # the base's score of each candidate; None: the host's order

    @property
    def label(self) -> int:
        """The target's index among the candidates; -1 when it is not there."""
        ids = [m.movie_id for m in self.candidates]
        return ids.index(self.target) if self.target in ids else -1


_SCHEMA = StructType([
    StructField(COL_USER, LongType(), False), StructField("split", StringType(), False),
    StructField("target", LongType(), False), StructField(COL_TIMESTAMP, LongType(), False),
    StructField("history", ArrayType(StructType([StructField(COL_MOVIE, LongType()), StructField(COL_RATING, DoubleType()),
                                                 StructField(COL_TIMESTAMP, LongType())]))),
])


def item_vectors(webroot: Path) -> dict[int, np.ndarray]:
    """The host's item2vecEmb.csv (`movieId:f1 f2 ...`) as unit vectors; empty when the folder has none."""
    path = webroot / ITEM_EMB_CSV
    if not path.is_file():
        return {}
    vectors = {}
    for line in path.read_text().splitlines():
        key, _, values = line.partition(":")
        if values.strip():
            vector = np.array(values.split(), dtype=np.float64)
            vectors[int(key)] = vector / (np.linalg.norm(vector) or 1.0)
    return vectors


def _host_order(history: Sequence[int], ids: np.ndarray, matrix: np.ndarray, k: int) -> list[int]:
    """The first k movies the host would put first for this history, rated ones left out."""
    rated = set(history)
    rows = [i for i, m in enumerate(ids) if int(m) in rated]
    if not rows:
        return [int(m) for m in ids if int(m) not in rated][:k]  # no vector to compare: the catalogue's order
    scores = matrix @ matrix[rows].mean(axis=0)
    return [int(ids[i]) for i in np.argsort(-scores, kind="stable") if int(ids[i]) not in rated][:k]


def _user_targets(valid_users: frozenset, train_per_user: int, known: frozenset, rows: Iterable[Row]
                  ) -> Iterator[tuple]:
    """One partition: (user, split, target, history as (movieId, rating, timestamp) rows) per chosen target."""
    for row in rows:
        ratings = [(int(r[COL_TIMESTAMP]), int(r[COL_MOVIE]), float(r[COL_RATING])) for r in row["_history"]]
        earlier: dict[int, int] = {}  # timestamp -> how many ratings came before that second
        for i, (ts, _, _) in enumerate(ratings):
            earlier.setdefault(ts, i)
        targets = [i for i, (ts, movie, rating) in enumerate(ratings)
                   if rating >= LIKED_RATING and movie in known and earlier[ts] >= MIN_PRIOR]
        if not targets:
            continue
        user = int(row[COL_USER])
        last = ratings[targets[-1]][0]
        chosen = [(targets[-1], VALID)] if user in valid_users else []
        # Strictly before the last target's second: a movie rated in that same second is no earlier choice.
        chosen += [(i, TRAIN) for i in [i for i in targets[:-1] if ratings[i][0] < last][-train_per_user:]]
        for i, split in chosen:
            ts, target, _ = ratings[i]
            yield user, split, target, ts, [(m, r, t) for t, m, r in ratings[:earlier[ts]]]


def _propose(rows: Sequence[Row], base: Ranker | None, k: int, movies: Mapping[int, MovieMeta],
             vectors: Mapping[int, np.ndarray]) -> list[tuple[list[int], list[float] | None]]:
    """Each row's candidates (and the base's scores of them): the base's top k, else the host's order."""
    histories = [tuple(UserRating(int(h[COL_MOVIE]), float(h[COL_RATING]), int(h[COL_TIMESTAMP])) for h in r["history"])
                 for r in rows]
    rankings: list = [None] * len(rows)
    if base is not None:
        catalogue = tuple(movies)  # the base ranks the whole catalogue, as it does when serving
        for start in range(0, len(rows), _BASE_BATCH):
            contexts = [UserContext(int(r[COL_USER]), h, catalogue, movies)
                        for r, h in zip(rows[start:start + _BASE_BATCH], histories[start:start + _BASE_BATCH])]
            rankings[start:start + _BASE_BATCH] = base.rank_many(contexts)
    ids = np.array(sorted(vectors), dtype=np.int64)
    matrix = np.stack([vectors[m] for m in ids]) if len(ids) else np.zeros((0, 1))
    proposals = []
    for history, ranking in zip(histories, rankings):
        top = [i for i in (ranking.items if ranking else ()) if i.movie_id in movies][:k]
        proposals.append(([i.movie_id for i in top], [i.score for i in top]) if top else
                         (_host_order([r.movie_id for r in history], ids, matrix, k), None))
    return proposals


def _sample(row: Row, candidates: list[int], scores: list[float] | None, movies: Mapping[int, MovieMeta],
            seed: int) -> ChoiceSample:
    user, split, target = int(row[COL_USER]), row["split"], int(row["target"])
    target_in = target in candidates
    if split == TRAIN:
        pairs = list(zip(candidates, scores or [0.0] * len(candidates)))
        if not target_in:
            pairs[-1] = (target, pairs[-1][1])
        # Shuffled: the model is to learn what the user likes, not the base's order (fusion adds that).
        random.Random(f"{seed}:{user}:{target}").shuffle(pairs)
        candidates, scores = [m for m, _ in pairs], (None if scores is None else [v for _, v in pairs])
    history = tuple(Rated(movies[int(h[COL_MOVIE])], float(h[COL_RATING])) for h in row["history"][-_HISTORY_KEPT:]
                    if int(h[COL_MOVIE]) in movies)
    return ChoiceSample(user, split, target, history, tuple(movies[m] for m in candidates),
                        split == TRAIN or target_in, None if scores is None else tuple(scores))


def base_folder(settings: Settings, rows: Sequence[Row]) -> Path:
    """A data folder the base is trained on for the samples: the data folder's ratings without each validation
    target and the rest of its user's ratings from that second on; movies and item2vec vectors linked. Kept
    under the models folder by the data folder's content key."""
    webroot = settings.host.data_webroot
    cut = {int(r[COL_USER]): int(r[COL_TIMESTAMP]) for r in rows if r["split"] == VALID}
    return cut_folder(webroot, settings.llm.models_dir / "palr" / "base-data" / data_key(webroot), cut)


def target_rows(settings: Settings, options: SampleOptions, *, master: str = "local[*]",
                spark: SparkSession | None = None, progress: bool = True) -> tuple[list[Row], dict[int, MovieMeta]]:
    """The chosen targets of the data folder (Spark): one row per sample with userId, split, target, timestamp
    (the target's second) and the whole history before it; and every movie's `MovieMeta`."""
    webroot = settings.host.data_webroot
    with session(spark, master, "sparrow-llm-choice-samples") as spark:
        with task_progress(spark, "choice samples", progress):
            ratings_df = read_ratings(spark, os.fspath(webroot / RATINGS_CSV))
            movies = movie_metas(read_movies(spark, os.fspath(webroot / MOVIES_CSV)), ratings_df)
            users = sorted(int(r[COL_USER]) for r in ratings_df.select(COL_USER).distinct().collect())
            valid = frozenset(users if options.valid_users is None else
                              random.Random(options.seed).sample(users, min(options.valid_users, len(users))))
            rows = spark.createDataFrame(user_histories(ratings_df).rdd.mapPartitions(
                partial(_user_targets, valid, options.train_per_user, frozenset(movies))), _SCHEMA).collect()
    return rows, movies


def build_samples(settings: Settings, options: SampleOptions = SampleOptions(), *,
                  base_for: Callable[[Settings], Ranker | None] | None = None, master: str = "local[*]",
                  spark: SparkSession | None = None, progress: bool = True) -> list[ChoiceSample]:
    """The choice samples of the data folder (`settings.host.data_webroot`), training ones first. `base_for`
    gives the base ranker (a ranker of the whole catalogue from a user's ratings) of a data folder's settings;
    its top K of each history are the candidates, else the host's order."""
    rows, movies = target_rows(settings, options, master=master, spark=spark, progress=progress)
    base = None if base_for is None else base_for(settings.replace(host={"data_dir": base_folder(settings, rows)}))
    try:
        proposals = _propose(rows, base, options.k, movies, item_vectors(settings.host.data_webroot) if base is None else {})
    finally:
        if base is not None:
            base.close()
    samples = [_sample(row, candidates, scores, movies, options.seed) for row, (candidates, scores) in zip(rows, proposals)]
    return sorted(samples, key=lambda s: (s.split != TRAIN, s.user_id, s.target))
