"""The learned stage's groups, built by time: one group per (user, target), the base's top K with their features.

The targets are PALR's choice samples' (`palr.samples.target_rows`): per user, ratings >= 3.5 with at least
`MIN_PRIOR` earlier ratings; the last one is a validation target for `valid_users` seeded users and a training
target for the others, and up to `train_per_user` earlier ones are training targets. Each target is proposed as an unseen movie would be at
serving: a target's *level* is its place from the user's end (0: the validation target, 1: the latest training
target, ...), and the base and every retrieval feature model of level L are trained on a copy of the data folder
without each user's level-L target and anything that user rated from that second on (`datafolder.cut_folder`).
(PALR's samples train one base without the validation targets only, so that base has seen every training target.)

A group is the level's base's top K for the history before the target, label 1 for the target; the features
(`features.features`) are those of that moment. Training groups whose target is not in the top K are dropped;
validation groups are all kept (a target outside the window counts 0 for every order).

Cold-start copies (`LtrOptions.short_histories`): every group again with its history cut to the last N ratings
before the target, the base's window and every feature (retrieval scores included) computed from those; the
column `COL_HISTORY` names the cut (`FULL`: none). Training reads every copy; early stopping and the fusion
weight read the validation users' full histories (`train.validation`).
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from ...config import ConfigError, Settings
from ...datafolder import cut_folder, data_key, read_data_folder
from ...domain import UserRating
from ...schema import COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER
from ..palr.samples import TRAIN, VALID, SampleOptions, item_vectors, target_rows
from ..retrieval.checkpoint import prepare_model
from ..retrieval.interactions import Catalogue, History
from ..retrieval.linear import LinearModel
from .features import RETRIEVAL_MODELS, FeatureSources, Query, features

__all__ = ["LtrOptions", "build_groups", "load_scorers", "top_k", "levels", "COL_GROUP", "COL_LABEL", "COL_BASE",
           "COL_SPLIT", "COL_LEVEL", "COL_HISTORY", "COL_TARGET", "FULL", "TRAIN", "VALID"]

# COL_SPLIT is the column `target_rows` names the split in.
COL_GROUP, COL_LABEL, COL_BASE, COL_SPLIT, COL_LEVEL = "group", "label", "base_score", "split", "level"
COL_HISTORY, COL_TARGET = "history", "target"  # the history's cut (`FULL`: all of it) and the target movie
FULL = 0


@dataclass(frozen=True)
class LtrOptions:
    k: int = 50
    train_per_user: int = 6  # training levels: each trains its own base and feature models
    valid_users: int = 300
    seed: int = 2024
    # Cold-start copies: every group again with the history cut to its last N ratings (the base's window and
    # every feature computed from them). Training reads them all; validation's choices read the full histories.
    short_histories: tuple[int, ...] = (10, 3)


def load_scorers(settings: Settings, *, progress: bool = False) -> tuple[Catalogue, dict[str, LinearModel]]:
    """The data folder's catalogue and its retrieval models (`features.RETRIEVAL_MODELS`), trained when missing."""
    _, movies = read_data_folder(settings.host.data_webroot)
    catalogue = Catalogue.from_movies(movies)
    scorers = {}
    for model in RETRIEVAL_MODELS:
        directory, _ = prepare_model(settings, model, progress=progress)
        scorers[model] = LinearModel.from_pretrained(directory)
        if len(scorers[model].movie_ids) != len(catalogue):
            raise ConfigError(f"{directory} was trained on another catalogue than {settings.host.data_webroot}'s")
    return catalogue, scorers


def top_k(scorer: LinearModel, catalogue: Catalogue, ratings: Sequence[Sequence[UserRating]], k: int
          ) -> list[tuple[list[int], list[float]]]:
    """The base's first k unrated movies and their scores for each history (empty when it reads nothing)."""
    histories = [History.from_ratings(catalogue, r) for r in ratings]
    readable = [i for i, h in enumerate(histories) if scorer.reads(h)]
    out: list[tuple[list[int], list[float]]] = [([], [])] * len(histories)
    if not readable:
        return out
    matrix = np.array(scorer.scores([histories[i] for i in readable]), dtype=np.float64)
    for row, i in enumerate(readable):
        matrix[row, histories[i].items] = -np.inf
        order = np.argsort(-matrix[row], kind="stable")[:k]
        order = order[np.isfinite(matrix[row, order])]
        out[i] = ([int(m) for m in catalogue.movie_ids[order]], [float(v) for v in matrix[row, order]])
    return out


def levels(rows: Sequence[Mapping]) -> list[int]:
    """Each target row's level: 0 for the user's last target (`target_rows`' validation row), 1 + its place from
    the user's latest earlier target."""
    out = [0] * len(rows)
    by_user: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        if row[COL_SPLIT] == TRAIN:
            by_user.setdefault(int(row[COL_USER]), []).append(i)
    for indexes in by_user.values():
        for level, i in enumerate(sorted(indexes, key=lambda i: -int(rows[i][COL_TIMESTAMP])), start=1):
            out[i] = level
    return out


def _level_folder(settings: Settings, cut: Mapping[int, int], level: int) -> Path:
    webroot = settings.host.data_webroot
    digest = hashlib.sha256(json.dumps(sorted(cut.items())).encode()).hexdigest()[:12]
    return cut_folder(webroot, settings.host.work_dir / "ltr" / "data" / f"{data_key(webroot)}-l{level}-{digest}", cut)


def _history(row: Mapping) -> tuple[UserRating, ...]:
    return tuple(UserRating(int(h[COL_MOVIE]), float(h[COL_RATING]), int(h[COL_TIMESTAMP])) for h in row["history"])


def build_groups(settings: Settings, options: LtrOptions, names: Sequence[str], *, base: str,
                 texts: Mapping[str, Mapping[int, np.ndarray]] | None, master: str = "local[*]",
                 spark: SparkSession | None = None, progress: bool = True) -> pd.DataFrame:
    """Every group's rows: `COL_GROUP`, userId, `COL_SPLIT`, `COL_LEVEL`, `COL_HISTORY`, `COL_TARGET`, movieId,
    `COL_LABEL`, `COL_BASE` (the base's score) and the features `names`; groups in (split, user, level, history)
    order, rows in the base's order."""
    if base not in RETRIEVAL_MODELS:
        raise ConfigError(f"the learned stage reranks a retrieval model ({', '.join(RETRIEVAL_MODELS)}), not {base!r}")
    found, _ = target_rows(settings, SampleOptions(k=options.k, train_per_user=options.train_per_user,
                                                   valid_users=None, seed=options.seed),
                           master=master, spark=spark, progress=progress)
    level_of = levels(found)
    users = sorted({int(r[COL_USER]) for r in found})
    valid = set(random.Random(options.seed).sample(users, min(options.valid_users, len(users))))
    rows = [{**r.asDict(), COL_SPLIT: VALID if lv == 0 and int(r[COL_USER]) in valid else TRAIN}
            for r, lv in zip(found, level_of)]
    ratings, movies = read_data_folder(settings.host.data_webroot)
    vectors = item_vectors(settings.host.data_webroot)
    parts = []
    for level in sorted(set(level_of)):
        chosen = [r for r, lv in zip(rows, level_of) if lv == level]
        cut = {int(r[COL_USER]): int(r[COL_TIMESTAMP]) for r in chosen}
        level_settings = settings.replace(host={"data_dir": _level_folder(settings, cut, level)})
        catalogue, scorers = load_scorers(level_settings, progress=progress)
        sources = FeatureSources.build(catalogue, scorers, ratings, movies, vectors, texts, names)
        full = [_history(r) for r in chosen]
        for cut_to in (FULL, *options.short_histories):
            histories = [h[-cut_to:] for h in full] if cut_to else full
            proposed = top_k(scorers[base], catalogue, histories, options.k)
            queries = [Query(int(r[COL_USER]), h, tuple(ids), float(r[COL_TIMESTAMP]))
                       for r, h, (ids, _) in zip(chosen, histories, proposed)]
            frame, _ = features(sources, queries, names)
            query = frame["query"].to_numpy()
            targets = np.array([int(r["target"]) for r in chosen], dtype=np.int64)
            frame[COL_LABEL] = (frame[COL_MOVIE].to_numpy() == targets[query]).astype(np.int64)
            frame[COL_BASE] = np.concatenate([s for _, s in proposed]) if len(frame) else np.zeros(0)
            frame[COL_USER] = np.array([int(r[COL_USER]) for r in chosen])[query]
            frame[COL_SPLIT] = np.array([r[COL_SPLIT] for r in chosen])[query]
            frame[COL_TARGET], frame[COL_LEVEL], frame[COL_HISTORY] = targets[query], level, cut_to
            parts.append(frame)
    groups = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[COL_USER, COL_MOVIE, *names])
    keys = [COL_SPLIT, COL_USER, COL_LEVEL, COL_HISTORY]
    groups = groups.sort_values(keys, kind="stable")
    groups[COL_GROUP] = groups.groupby(keys, sort=False).ngroup()
    in_window = groups.groupby(COL_GROUP)[COL_LABEL].transform("max") > 0
    groups = groups[(groups[COL_SPLIT] == VALID) | in_window].drop(columns="query").reset_index(drop=True)
    groups[COL_GROUP] = groups.groupby(COL_GROUP, sort=False).ngroup()
    return groups
