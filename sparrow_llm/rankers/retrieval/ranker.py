"""`popularity`, `ease`, `ease-recent`, `sasrec`: the whole catalogue ranked for a user from their ratings.

Each scores every movie of the data folder's movies.csv, ranks those of the user's candidates (source
`catalogue`: every movie the host loads, so each listed movie is one the stage can serve; the evaluation's
sampled candidates otherwise), leaves out the movies the user rated, and keeps the top `top_n`; the stage
serves them, then the host's order. A user with no
rating of a catalogue movie the model reads (no ratings at all; for `ease-recent` configured on liked
movies, no liked one) gets None, so the stage serves the host's order. Reasons say only what is true of the
data: how many people rated the movie, or how many who liked a movie the user liked also liked it.
"""
from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ...config import ConfigError, Settings
from ...datafolder import file_hash
from ...domain import RankedItem, Ranking, UserContext
from ...schema import SOURCE_CATALOGUE
from ...store import Store
from ..base import BaseRanker
from .checkpoint import RetrievalData, load_data, prepare_model
from .interactions import CONFIG_FILE, WEIGHTS_FILE, History, cooccurrence, popularity_counts
from .linear import LinearModel

__all__ = ["RetrievalRanker", "Scorer", "SASRecScorer", "from_settings", "popularity_ranker", "ease_ranker",
           "ease_recent_ranker", "sasrec_ranker", "TOP_N"]

TOP_N = 200  # a record's length: far more than a page, and the base's top K of any reranker


class Scorer(Protocol):
    def reads(self, history: History) -> bool:
        """Whether the history holds anything the model scores from."""

    def scores(self, histories: Sequence[History]) -> np.ndarray: ...


class SASRecScorer:
    def __init__(self, directory: Path):
        from .sasrec import SASRec  # torch loads for this model only

        self.model = SASRec.from_pretrained(directory)
        self.interactions = self.model.config.interactions

    def reads(self, history: History) -> bool:
        return bool(len(history.select(self.interactions)))

    def scores(self, histories: Sequence[History]) -> np.ndarray:
        return self.model.predict([h.select(self.interactions) for h in histories])


class RetrievalRanker(BaseRanker):
    backend = "retrieval"
    candidate_source = SOURCE_CATALOGUE

    def __init__(self, name: str, scorer: Scorer, data: RetrievalData, version: str, *, top_n: int = TOP_N,
                 explain_by_counts: bool = False):
        if top_n < 1:
            raise ValueError("top_n must be >= 1")
        self.name, self.scorer, self.version, self.top_n = name, scorer, version, top_n
        self.catalogue = data.catalogue
        self.explain_by_counts = explain_by_counts  # popularity: its reason is the count itself
        items = len(data.catalogue)
        self.rated_by = popularity_counts([h.items for h in data.full], items).astype(np.int64)
        # Items x items: built only for the reasons that read it (popularity explains by its counts).
        self.co_liked = None if explain_by_counts else cooccurrence([h.liked for h in data.full], items)

    def rank(self, ctx: UserContext) -> Ranking | None:
        return self.rank_many([ctx])[0]

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        histories = [History.from_ratings(self.catalogue, ctx.ratings) for ctx in contexts]
        readable = [i for i, h in enumerate(histories) if self.scorer.reads(h)]
        rankings: list[Ranking | None] = [None] * len(contexts)
        if not readable:
            return rankings
        scores = self.scorer.scores([histories[i] for i in readable])
        allowed: dict[int, np.ndarray] = {}  # contexts of one bulk fetch share their candidates: one mask each
        for row, i in enumerate(readable):
            candidates = contexts[i].candidate_ids
            if id(candidates) not in allowed:
                allowed[id(candidates)] = np.isin(self.catalogue.movie_ids, np.fromiter(candidates, np.int64))
            rankings[i] = self._ranking(histories[i], scores[row], len(contexts[i].ratings), allowed[id(candidates)])
        return rankings

    def _ranking(self, history: History, scores: np.ndarray, rated: int, allowed: np.ndarray) -> Ranking | None:
        scores = np.where(allowed, np.asarray(scores, dtype=np.float64), -np.inf)
        scores[history.items] = -np.inf  # what the user rated is never recommended again
        order = np.argsort(-scores, kind="stable")[: self.top_n]  # ties: the lower catalogue index first
        order = order[np.isfinite(scores[order])]
        if not len(order):
            return None
        reasons = self._reasons(history, order)
        items = tuple(RankedItem(int(self.catalogue.movie_ids[j]), round(float(scores[j]), 6), reason)
                      for j, reason in zip(order, reasons))
        return Ranking(items, {"history": rated})

    def _reasons(self, history: History, order: np.ndarray) -> list[str]:
        popular = [f"rated by {self.rated_by[j]} people here" for j in order]
        liked = np.unique(history.liked)
        if self.explain_by_counts or not len(liked):
            return popular
        # For each recommended movie, the movie the user liked that most people liked together with it.
        together = self.co_liked[liked][:, order].toarray()
        best = together.argmax(axis=0)
        return [f"liked by {together[b, col]} people who also liked {self.catalogue.titles[liked[b]]}"
                if together[b, col] > 0 else popular[col] for col, b in enumerate(best)]


def _version(name: str, directory: Path) -> str:
    return f"{name}-{file_hash(directory / CONFIG_FILE, directory / WEIGHTS_FILE)[:10]}"


def from_settings(settings: Settings, store: Store | None = None, *, model: str) -> RetrievalRanker:
    """The registry's factory: the data folder's model (trained now when missing), its catalogue and counts.
    The store is not used (the models keep no cache)."""
    directory, _ = prepare_model(settings, model, progress=False)
    return _loaded(settings, model, directory, _version(model, directory))


@lru_cache(maxsize=4)
def _loaded(settings: Settings, model: str, directory: Path, version: str) -> RetrievalRanker:
    """Loaded once per process and version: every ranker composed over it (a Spark partition's, the eval's)
    shares its arrays, which it never changes."""
    data = load_data(settings, n_folds=0)  # serving needs the histories only, not the validation folds
    if model == "sasrec":
        scorer: Scorer = SASRecScorer(directory)
        items = scorer.model.config.n_items
    else:
        scorer = LinearModel.load(directory)
        items = len(scorer.movie_ids)
    if items != len(data.catalogue):
        raise ConfigError(f"{directory} was trained on {items} movies, the data folder has {len(data.catalogue)}")
    return RetrievalRanker(model, scorer, data, version, explain_by_counts=model == "popularity")


popularity_ranker = partial(from_settings, model="popularity")
ease_ranker = partial(from_settings, model="ease")
ease_recent_ranker = partial(from_settings, model="ease-recent")
sasrec_ranker = partial(from_settings, model="sasrec")
