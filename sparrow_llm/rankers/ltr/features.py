"""The learned stage's features of (user, candidate) pairs, for a batch of users at once, as of a moment.

A `Query` is one user's ratings before a cut (a timestamp; serving cuts after everything), and the candidates
to score (the base's top K). `FeatureSources` holds what the features read, all of one data folder:

  * the retrieval models (`RETRIEVAL_MODELS`): each one's score of the candidate and its rank among the movies
    the user has not rated (1 = its first pick);
  * the item statistics as of the cut (`ItemTimeline`: how many ratings the movie had before it, their mean),
    the release year, the user's history length and mean rating, the genre affinity (the share of the user's
    liked movies that carry each of the candidate's genres: max and mean over them) and the year gap to the
    mean year of the liked movies;
  * item2vec: cosine of the candidate's host vector to the mean vector of the user's rated movies;
  * the language models' features (`LLM_FEATURES`, a group that can be switched off), from each source of
    per-movie text vectors (`TEXT_SOURCES`: `knowledge`, the local LLM's reading of the movie's title, year and
    genres, and `minilm`, the sentence encoder's), centred on the catalogue's mean vector (mean-pooled hidden
    states share a large common direction): the cosine of the candidate's vector to the mean vector of the
    user's `RECENT` latest liked movies (`mean_cos`), the largest cosine to any of them (`max_cos`), the largest
    to any of the `RECENT` latest disliked ones (`disliked_cos`), and the cosines to the `RECENT` latest rated
    movies weighted by each rating's distance from the user's mean rating (`rated_cos`, item-kNN on text).
    A third source, `adapted` (`adapt`), maps the knowledge vectors onto EASE's item space (KAR's knowledge
    adaptor, linear), fitted per data folder; it is measured by bench/bench_ltr.py, not served by default.

A value that cannot be computed (no vector, no liked movie, no genre) is NaN; LightGBM routes missing values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ...catalog import movie_catalog
from ...domain import UserRating
from ...schema import COL_GENRES, COL_MOVIE, COL_RATING, COL_RELEASE_YEAR, COL_TIMESTAMP, LIKED_RATING
from ..base import unit_rows
from ..retrieval.interactions import Catalogue, History
from ..retrieval.ranker import Scorer

__all__ = ["Query", "ItemTimeline", "Vectors", "FeatureSources", "RETRIEVAL_MODELS", "CORE_FEATURES",
           "LLM_FEATURES", "ALL_LLM_FEATURES", "TEXT_SOURCES", "ADAPTED", "TEXT_KINDS", "adapt", "USER_FEATURES", "feature_names",
           "features", "RECENT"]

RETRIEVAL_MODELS = ("ease-recent", "ease", "popularity")
RECENT = 10  # the latest liked (disliked, rated) movies the text features compare with


def _column(model: str) -> str:
    return model.replace("-", "_")


CORE_FEATURES = (
    *(f"{_column(m)}_{kind}" for m in RETRIEVAL_MODELS for kind in ("score", "rank")),
    "item2vec_cos", "item_count", "item_mean", "item_year", "user_count", "user_mean", "genre_max", "genre_mean",
    "year_gap",
)
TEXT_SOURCES = ("knowledge", "minilm")
ADAPTED = "adapted"  # the knowledge vectors mapped onto EASE's item space (`adapt`), a source derived per data folder
TEXT_KINDS = ("mean_cos", "max_cos", "disliked_cos", "rated_cos")
ALL_LLM_FEATURES = tuple(f"{source}_{kind}" for source in (*TEXT_SOURCES, ADAPTED) for kind in TEXT_KINDS)
ADAPT_DIM, ADAPT_ALPHA = 32, 1.0
# The served set: every text feature of both sources (the best validation NDCG@10 of the sets bench/bench_ltr.py
# compares, though no set beat the stage without them significantly).
LLM_FEATURES = tuple(f"{source}_{kind}" for source in TEXT_SOURCES for kind in TEXT_KINDS)
# The same for every candidate of a user: they shift a list's scores, never its order (no reason names them).
USER_FEATURES = ("user_count", "user_mean")


def feature_names(llm: bool) -> tuple[str, ...]:
    """The feature set: the core features, and the LLM's when `llm`."""
    return CORE_FEATURES + (LLM_FEATURES if llm else ())


@dataclass(frozen=True)
class Query:
    user_id: int
    ratings: tuple[UserRating, ...]  # oldest first, all before `cut`
    candidates: tuple[int, ...]
    cut: float = np.inf  # statistics count the ratings strictly before it


class ItemTimeline:
    """Every movie's ratings in time order, for counts and means as of any moment (vectorised lookups)."""

    def __init__(self, ratings: pd.DataFrame, catalogue: Catalogue):
        items = catalogue.index(ratings[COL_MOVIE].to_numpy())
        known = items >= 0
        frame = pd.DataFrame({"item": items[known], "ts": ratings[COL_TIMESTAMP].to_numpy(np.int64)[known],
                              "rating": ratings[COL_RATING].to_numpy(np.float64)[known]}).sort_values(
            ["item", "ts"], kind="stable")
        self.items = frame["item"].to_numpy(np.int64)
        self.ts = frame["ts"].to_numpy(np.int64)
        self.cumsum = np.concatenate([[0.0], np.cumsum(frame["rating"].to_numpy())])
        self.start = np.searchsorted(self.items, np.arange(len(catalogue) + 1))

    def stats(self, items: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count, mean rating) of each item's ratings strictly before its cut; the mean is NaN without one."""
        lo, hi = self.start[items], self.start[items + 1]
        ends = np.array([lo_ + np.searchsorted(self.ts[lo_:hi_], c, side="left") if np.isfinite(c) else hi_
                         for lo_, hi_, c in zip(lo, hi, cuts)], dtype=np.int64)
        count = ends - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, (self.cumsum[ends] - self.cumsum[lo]) / count, np.nan)
        return count.astype(np.float64), mean


@dataclass(frozen=True)
class Vectors:
    """Unit vectors of catalogue movies (rows of movies without one are zero, `has` False)."""

    matrix: np.ndarray
    has: np.ndarray

    @classmethod
    def build(cls, catalogue: Catalogue, vectors: Mapping[int, np.ndarray], *, center: bool = False) -> "Vectors":
        """`center`: subtract the mean vector of the catalogue's movies first."""
        dim = len(next(iter(vectors.values()))) if vectors else 1
        matrix = np.zeros((len(catalogue), dim), dtype=np.float32)
        has = np.zeros(len(catalogue), dtype=bool)
        index = catalogue.index(list(vectors))
        for i, vector in zip(index, vectors.values()):
            if i >= 0:
                matrix[i], has[i] = vector, True
        if center and has.any():
            matrix[has] -= matrix[has].mean(axis=0)
        return cls(unit_rows(matrix), has)

    def mean_cos(self, seeds: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Cosine of each candidate to the mean of the seeds' vectors (NaN without a vector on either side)."""
        seeds = seeds[self.has[seeds]]
        if not len(seeds):
            return np.full(len(candidates), np.nan)
        profile = self.matrix[seeds].mean(axis=0)
        profile /= np.linalg.norm(profile) or 1.0
        return np.where(self.has[candidates], self.matrix[candidates] @ profile, np.nan)

    def max_cos(self, seeds: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        seeds = seeds[self.has[seeds]]
        if not len(seeds):
            return np.full(len(candidates), np.nan)
        return np.where(self.has[candidates], (self.matrix[candidates] @ self.matrix[seeds].T).max(axis=1), np.nan)

    def weighted_cos(self, seeds: np.ndarray, weights: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """sum(w * cos(candidate, seed)) / sum(|w|) over the seeds with a vector (NaN when every w is 0)."""
        known = self.has[seeds]
        seeds, weights = seeds[known], weights[known]
        total = np.abs(weights).sum()
        if not total:
            return np.full(len(candidates), np.nan)
        return np.where(self.has[candidates], (self.matrix[candidates] @ self.matrix[seeds].T) @ weights / total,
                        np.nan)

    def features(self, history: History, candidates: np.ndarray, kinds: Sequence[str]) -> dict[str, np.ndarray]:
        """The `TEXT_KINDS` features `kinds` of one user's candidates (see the module docstring)."""
        liked = history.liked[::-1][:RECENT]
        out = {}
        if "mean_cos" in kinds:
            out["mean_cos"] = self.mean_cos(liked, candidates)
        if "max_cos" in kinds:
            out["max_cos"] = self.max_cos(liked, candidates)
        if "disliked_cos" in kinds:
            out["disliked_cos"] = self.max_cos(history.items[history.ratings < LIKED_RATING][::-1][:RECENT], candidates)
        if "rated_cos" in kinds:
            recent = slice(max(len(history.items) - RECENT, 0), None)
            ratings = history.ratings[recent]
            weights = ratings - ratings.mean() if len(ratings) else ratings
            out["rated_cos"] = self.weighted_cos(history.items[recent], weights, candidates)
        return out


def adapt(knowledge: Vectors, ease: np.ndarray) -> Vectors:
    """KAR's knowledge adaptor, linear: a ridge map (`ADAPT_ALPHA`) of the centred knowledge vectors onto the
    collaborative item space (the top `ADAPT_DIM` components of EASE's item-item weights), fitted on the
    movies with a vector; a movie with few ratings gets the place its text predicts."""
    from sklearn.linear_model import Ridge
    from sklearn.utils.extmath import randomized_svd

    u, s, _ = randomized_svd(np.asarray(ease, dtype=np.float64), ADAPT_DIM, random_state=0)
    x = knowledge.matrix[knowledge.has]
    mapped = Ridge(alpha=ADAPT_ALPHA).fit(x, (u * s)[knowledge.has]).predict(knowledge.matrix)
    return Vectors(unit_rows(mapped.astype(np.float32)) * knowledge.has[:, None], knowledge.has)


@dataclass
class FeatureSources:
    """What the features of one data folder read (see the module docstring)."""

    catalogue: Catalogue
    scorers: Mapping[str, Scorer]  # RETRIEVAL_MODELS, trained on the data the samples may see
    timeline: ItemTimeline
    years: np.ndarray  # per catalogue movie, NaN when unknown
    genres: np.ndarray  # catalogue x genres, 0/1
    item2vec: Vectors
    texts: Mapping[str, Vectors]  # `TEXT_SOURCES` given (none: the LLM's features are off), centred

    @classmethod
    def build(cls, catalogue: Catalogue, scorers: Mapping[str, Scorer], ratings: pd.DataFrame, movies: pd.DataFrame,
              item2vec: Mapping[int, np.ndarray], texts: Mapping[str, Mapping[int, np.ndarray]] | None,
              names: Sequence[str] = ()) -> "FeatureSources":
        """`names`: the features to be computed (the `ADAPTED` vectors are fitted only when they read them)."""
        meta = movie_catalog(movies).reindex(catalogue.movie_ids)
        years = meta[COL_RELEASE_YEAR].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        names = sorted({g for gs in meta[COL_GENRES].dropna() for g in gs})
        column = {g: j for j, g in enumerate(names)}
        genres = np.zeros((len(catalogue), max(len(names), 1)), dtype=np.float32)
        for i, gs in enumerate(meta[COL_GENRES]):
            for g in gs if isinstance(gs, tuple) else ():
                genres[i, column[g]] = 1.0
        vectors = {name: Vectors.build(catalogue, v, center=True) for name, v in (texts or {}).items()}
        if "knowledge" in vectors and "ease" in scorers and any(n.startswith(f"{ADAPTED}_") for n in names):
            vectors[ADAPTED] = adapt(vectors["knowledge"], scorers["ease"].weights)
        return cls(catalogue, scorers, ItemTimeline(ratings, catalogue), years, genres,
                   Vectors.build(catalogue, item2vec), vectors)


def _ranks(scores: np.ndarray, rated: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One user's model scores of the candidates and their ranks (1 first) among the unrated movies."""
    row = np.array(scores, dtype=np.float64)
    row[rated] = -np.inf
    ordered = np.sort(row)
    mine = row[candidates]
    # 1 + how many unrated movies score strictly higher.
    return mine, (len(ordered) - np.searchsorted(ordered, mine, side="right") + 1).astype(np.float64)


def features(sources: FeatureSources, queries: Sequence[Query], names: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per (query, candidate of the catalogue), in the queries' order: the features `names` and the
    columns `query` (the query's index) and `movieId`. Also the catalogue index of each row's movie."""
    histories = [History.from_ratings(sources.catalogue, q.ratings) for q in queries]
    cands = [sources.catalogue.index(q.candidates) for q in queries]
    cands = [c[c >= 0] for c in cands]
    sizes = np.array([len(c) for c in cands])
    rows = np.repeat(np.arange(len(queries)), sizes)
    flat = np.concatenate(cands) if len(cands) else np.zeros(0, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for model, scorer in sources.scorers.items():
        readable = [i for i, h in enumerate(histories) if scorer.reads(h)]
        score, rank = np.full(len(flat), np.nan), np.full(len(flat), np.nan)
        if readable:
            matrix = scorer.scores([histories[i] for i in readable])
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            for row, i in enumerate(readable):
                part = slice(offsets[i], offsets[i + 1])
                score[part], rank[part] = _ranks(matrix[row], histories[i].items, cands[i])
        out[f"{_column(model)}_score"], out[f"{_column(model)}_rank"] = score, rank
    cuts = np.array([q.cut for q in queries], dtype=np.float64)[rows]
    out["item_count"], out["item_mean"] = sources.timeline.stats(flat, cuts)
    out["item_year"] = sources.years[flat]
    user_count = np.array([len(h.items) for h in histories], dtype=np.float64)
    user_mean = np.array([h.ratings.mean() if len(h.ratings) else np.nan for h in histories])
    out["user_count"], out["user_mean"] = user_count[rows], user_mean[rows]
    per_user = {name: [] for name in ("item2vec_cos", "genre_max", "genre_mean", "year_gap")}
    wanted = {source: [k for k in TEXT_KINDS if f"{source}_{k}" in names] for source in sources.texts}
    per_user.update({f"{source}_{k}": [] for source, kinds in wanted.items() for k in kinds})
    for h, c in zip(histories, cands):
        liked = h.liked
        per_user["item2vec_cos"].append(sources.item2vec.mean_cos(h.items, c))
        cand_genres = sources.genres[c]
        n_genres = cand_genres.sum(axis=1)
        if len(liked):
            share = sources.genres[liked].mean(axis=0)
            hit = cand_genres * share
            genre_max = np.where(n_genres > 0, hit.max(axis=1), np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                genre_mean = np.where(n_genres > 0, hit.sum(axis=1) / n_genres, np.nan)
            liked_years = sources.years[liked]
            mean_year = np.nanmean(liked_years) if np.isfinite(liked_years).any() else np.nan
            year_gap = np.abs(sources.years[c] - mean_year)
        else:
            genre_max = genre_mean = year_gap = np.full(len(c), np.nan)
        per_user["genre_max"].append(genre_max)
        per_user["genre_mean"].append(genre_mean)
        per_user["year_gap"].append(year_gap)
        for source, kinds in wanted.items():
            for kind, values in sources.texts[source].features(h, c, kinds).items():
                per_user[f"{source}_{kind}"].append(values)
    for name, parts in per_user.items():
        out[name] = np.concatenate(parts) if parts else np.zeros(0)
    missing = [n for n in names if n not in out]
    if missing:
        raise ValueError(f"features {missing} need sources this stage was not given (text vectors?)")
    frame = pd.DataFrame({"query": rows, COL_MOVIE: sources.catalogue.movie_ids[flat],
                          **{n: out[n].astype(np.float64) for n in names}})
    return frame, flat

