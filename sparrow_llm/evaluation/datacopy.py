"""The copy of the data folder the host and every model see during an evaluation: hidden ratings removed."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import schema
from ..candidates import select_users
from ..config import ConfigError
from ..datafolder import read_data_csv
from .protocol import MIN_HISTORY, Holdout, keep_last, leave_last_out

__all__ = ["read_embeddings", "host_user_embeddings", "train_item2vec", "EvalCopy", "write_eval_copy",
           "build_movielens_webroot"]

log = logging.getLogger(__name__)


def read_embeddings(path: Path) -> dict[int, np.ndarray]:
    """The host's `id:f1 f2 ... fN` lines."""
    vectors = {}
    for line in Path(path).read_text().splitlines():
        key, _, values = line.partition(":")
        if values.strip():
            vectors[int(key)] = np.array(values.split(), dtype=np.float64)
    return vectors


def _write_embeddings(path: Path, vectors: Mapping[int, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}:{' '.join(f'{v:.7g}' for v in vec)}\n" for key, vec in vectors.items()))


def host_user_embeddings(ratings: pd.DataFrame, item_vectors: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The host's user vectors: the sum of the item vectors of the movies a user rated, divided by
    the user's number of ratings (HOST_API.md; it matches the fixture's userEmb.csv to 1e-6). Users
    none of whose movies has a vector get none, as the host's join would drop them."""
    rated = ratings[ratings[schema.COL_MOVIE].isin(item_vectors.keys())]
    if rated.empty:
        return {}
    users, rows = np.unique(rated[schema.COL_USER].to_numpy(), return_inverse=True)
    vectors = np.stack([item_vectors[m] for m in rated[schema.COL_MOVIE]])
    sums = np.zeros((len(users), vectors.shape[1]))
    np.add.at(sums, rows, vectors)
    counts = ratings.groupby(schema.COL_USER).size()
    return {int(u): sums[i] / counts[u] for i, u in enumerate(users)}


def train_item2vec(ratings: pd.DataFrame, *, dim: int = 10, window: int = 5, seed: int = 0,
                   master: str = "local[*]") -> dict[int, np.ndarray]:
    """item2vec as the host's own embedding job trains it: Spark ML's Word2Vec (10 dims, window 5) over each
    user's liked movies in time order. One partition and a fixed seed, so a run is repeatable. Movies
    nobody liked get no vector (the host then ranks them last, as it does its own such movies)."""
    from pyspark.ml.feature import Word2Vec

    from ..spark import session

    liked = ratings[ratings[schema.COL_RATING] >= schema.LIKED_RATING].sort_values(
        [schema.COL_USER, schema.COL_TIMESTAMP, schema.COL_MOVIE])
    if liked.empty:
        return {}
    sequences = liked.groupby(schema.COL_USER, sort=True)[schema.COL_MOVIE].agg(lambda s: [str(m) for m in s])
    with session(None, master, "sparrow-llm-item2vec") as spark:
        frame = spark.createDataFrame([(seq,) for seq in sequences], ["movies"])
        model = Word2Vec(vectorSize=dim, windowSize=window, minCount=1, numPartitions=1, maxIter=5, seed=seed,
                         inputCol="movies").fit(frame)
        return {int(row["word"]): np.asarray(row["vector"].toArray(), dtype=np.float64)
                for row in model.getVectors().collect()}


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve())


@dataclass(frozen=True)
class EvalCopy:
    """What `write_eval_copy` wrote and chose."""

    source_ratings: pd.DataFrame
    ratings: pd.DataFrame  # the copy's ratings.csv
    holdouts: dict[int, Holdout]  # every user with a liked rating; history_size as in the copy
    eligible: list[int]  # >= min_history earlier ratings (decided before any --history cut)
    asked: list[int]  # the users asked for (--users), or the sample
    evaluated: list[int]  # asked and eligible


def write_eval_copy(source: Path, dest: Path, *, seed: int = 0, min_history: int = MIN_HISTORY,
                    users: Sequence[int] = (), sample: int | None = None, history: int | None = None) -> EvalCopy:
    """The copy of `source` the host and every model see (docstring, steps 1 and 2), written to `dest` (replaced),
    and the users it evaluates: eligible ones (`users` as asked, or a seeded `sample`, else all). With `history`,
    each evaluated user keeps only the last `history` ratings before the hidden one (`keep_last`).
    """
    missing = [rel for rel in (schema.MOVIES_CSV, schema.LINKS_CSV, schema.RATINGS_CSV) if not (source / rel).is_file()]
    if missing:
        raise ConfigError(f"{source} is not a SparrowRecsys data folder: missing {', '.join(missing)}")
    if history is not None and history < 1:
        raise ConfigError(f"--history must be >= 1, got {history}")
    ratings = read_data_csv(source / schema.RATINGS_CSV)
    reduced, holdouts = leave_last_out(ratings)
    # At least one rating: the host knows a user only through ratings.csv.
    eligible = sorted(u for u, h in holdouts.items() if h.history_size >= max(1, min_history))
    asked = select_users(eligible, users, sample, seed)
    evaluated = sorted(set(asked) & set(eligible))
    if not evaluated:
        raise ConfigError(f"no eligible user to evaluate (eligible: {len(eligible)}; asked for {list(users) or 'all'})")
    if history is not None:
        reduced = keep_last(reduced, evaluated, history)
        sizes = reduced.groupby(schema.COL_USER).size()
        holdouts = {u: replace(h, history_size=int(sizes.get(u, 0))) for u, h in holdouts.items()}
    if dest.exists():
        shutil.rmtree(dest)
    for rel in (schema.MOVIES_CSV, schema.LINKS_CSV):
        _link(dest / rel, source / rel)
    if (source / "posters").is_dir():
        _link(dest / "posters", source / "posters")
    else:
        (dest / "posters").mkdir(parents=True)
    # A literal NaN rating (pandas reads it as a missing value) is written back as NaN, which the host's loader
    # (Float.parseFloat) reads; pandas' default, an empty field, made the host die with NumberFormatException.
    reduced.to_csv(dest / schema.RATINGS_CSV, index=False, na_rep="NaN")
    item_emb = source / schema.ITEM_EMB_CSV
    if item_emb.is_file():
        _link(dest / schema.ITEM_EMB_CSV, item_emb)
        vectors = read_embeddings(item_emb)
    else:
        log.info("%s has no %s: training item2vec on the copy's ratings", source, schema.ITEM_EMB_CSV)
        vectors = train_item2vec(reduced, seed=seed)
        _write_embeddings(dest / schema.ITEM_EMB_CSV, vectors)
    _write_embeddings(dest / schema.USER_EMB_CSV, host_user_embeddings(reduced, vectors))
    return EvalCopy(ratings, reduced, holdouts, eligible, asked, evaluated)


def build_movielens_webroot(movielens: Path, dest: Path) -> Path:
    """A host-layout folder from MovieLens (ml-latest-small): movies, links, ratings as they are,
    an empty posters/; no item2vecEmb.csv, so `write_eval_copy` trains one on the copy's ratings
    (training it here, on every rating, would leak the hidden ones into the embeddings)."""
    names = {schema.MOVIES_CSV: "movies.csv", schema.LINKS_CSV: "links.csv", schema.RATINGS_CSV: "ratings.csv"}
    missing = [n for n in names.values() if not (movielens / n).is_file()]
    if missing:
        raise ConfigError(f"{movielens} is not a MovieLens folder: missing {', '.join(missing)}")
    if dest.exists():
        shutil.rmtree(dest)
    for rel, name in names.items():
        _link(dest / rel, movielens / name)
    (dest / "posters").mkdir(parents=True)
    return dest
