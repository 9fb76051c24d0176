"""`LtrRanker`: the learned stage served, a reranker of the base's top K.

Per batch of users: the features of every (user, candidate) pair as of now (`features.features`, the same code
the training groups went through), LightGBM's score, fused with the base's (`fusion.fuse`, at the weight chosen on
validation users; 0 serves the base's order and computes nothing). A movie's reason is its strongest positive
feature contribution (LightGBM's `pred_contrib`) in words, from the feature's own value, so it is true of the
data; the user-level features (the same for every candidate) never give one.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import numpy as np

from ...config import ConfigError, Settings
from ...datafolder import data_key, file_hash, read_data_folder
from ...domain import RankedItem, Ranking, UserContext
from ...store import Store
from ..base import BaseRanker, Ranker
from ..fusion import fuse, window_base_scores
from ..palr.samples import item_vectors
from .features import ADAPTED, RETRIEVAL_MODELS, TEXT_KINDS, USER_FEATURES, FeatureSources, Query, features
from .knowledge import load_texts, sources_of
from .samples import LtrOptions, load_scorers
from .train import MODEL_FILE, LtrConfig, read_config, train_model

__all__ = ["LtrRanker", "from_settings", "ltr_ranker", "llm_ltr_ranker", "reason"]


def _rank_phrase(model: str) -> Callable[[dict], str]:
    key = f"{model.replace('-', '_')}_rank"
    return lambda v: f"{model} puts it at #{v[key]:.0f} of the movies you have not rated"


_TEXT_READERS = {"knowledge": "the language model", "minilm": "the sentence encoder",
                 ADAPTED: "the language model, mapped onto the ratings' item space,"}
_TEXT_PHRASES = {
    "mean_cos": "reads its title and genres as close to the movies you liked recently (cosine {:.2f})",
    "max_cos": "reads its title and genres as close to one of the movies you liked recently (cosine {:.2f})",
    "disliked_cos": "puts its title and genres at cosine {:.2f} to the nearest movie you disliked recently",
    "rated_cos": "reads its title and genres as close to your recent ratings above your mean (score {:.2f})",
}


def _text_phrase(source: str, kind: str) -> Callable[[dict], str]:
    key = f"{source}_{kind}"
    return lambda v: f"{_TEXT_READERS[source]} {_TEXT_PHRASES[kind].format(v[key])}"


_PHRASES: dict[str, Callable[[dict], str]] = {
    **{f"{m.replace('-', '_')}_{kind}": _rank_phrase(m) for m in RETRIEVAL_MODELS
       for kind in ("score", "rank")},
    "item2vec_cos": lambda v: f"the host's item vectors put it {v['item2vec_cos']:.2f} close to the movies you rated",
    "item_count": lambda v: f"rated by {v['item_count']:.0f} people here",
    "item_mean": lambda v: f"rated {v['item_mean']:.1f} on average by {v['item_count']:.0f} people here",
    "item_year": lambda v: f"released in {v['item_year']:.0f}",
    "genre_max": lambda v: f"{v['genre_max']:.0%} of the movies you liked share a genre with it",
    "genre_mean": lambda v: f"{v['genre_max']:.0%} of the movies you liked share a genre with it",
    "year_gap": lambda v: (f"released in {v['item_year']:.0f}, {v['year_gap']:.0f} years from the mean year of "
                           f"the movies you liked"),
    **{f"{source}_{kind}": _text_phrase(source, kind) for source in _TEXT_READERS for kind in TEXT_KINDS},
}


def reason(values: dict, contributions: dict) -> str:
    """The phrase of the feature with the largest positive contribution whose values it reads are known; ""."""
    ranked = sorted((c, name) for name, c in contributions.items()
                    if c > 0 and name not in USER_FEATURES and np.isfinite(values.get(name, np.nan)))
    for _, name in reversed(ranked):
        try:
            return _PHRASES[name](values)
        except (KeyError, ValueError):  # a value the phrase reads is missing (NaN formats, a key may be absent)
            continue
    return ""


class LtrRanker(BaseRanker):
    backend = "lightgbm"

    def __init__(self, name: str, booster, config: LtrConfig, sources: FeatureSources, version: str):
        self.name, self.booster, self.config, self.sources, self.version = name, booster, config, sources, version
        self.names = list(config.features)
        self.weight = config.weight
        self.window = config.k  # the base's top K it was trained on

    def rank(self, ctx: UserContext) -> Ranking | None:
        return self.rank_many([ctx])[0]

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        windows = [ctx.unrated_candidates() for ctx in contexts]
        if self.weight == 0.0:  # the base's order, whatever the model says: nothing to compute
            return [self._ranking(w, window_base_scores(w, ctx.base_scores), None, None) if w else None
                    for ctx, w in zip(contexts, windows)]
        queries = [Query(ctx.user_id, ctx.ratings, tuple(w)) for ctx, w in zip(contexts, windows)]
        frame, _ = features(self.sources, queries, self.names)
        matrix = frame[self.names].to_numpy(np.float64)
        scores = self.booster.predict(matrix) if len(frame) else np.zeros(0)
        contrib = self.booster.predict(matrix, pred_contrib=True) if len(frame) else np.zeros((0, len(self.names) + 1))
        query = frame["query"].to_numpy()
        out: list[Ranking | None] = []
        for i, ctx in enumerate(contexts):
            rows = np.flatnonzero(query == i)
            if not len(rows):
                out.append(None)
                continue
            window = [int(m) for m in frame["movieId"].to_numpy()[rows]]
            base = window_base_scores(window, ctx.base_scores)
            fused = fuse(scores[rows], base, self.weight)
            reasons = [reason(dict(zip(self.names, matrix[r])), dict(zip(self.names, contrib[r, :-1]))) for r in rows]
            out.append(self._ranking(window, fused, reasons, scores[rows]))
        return out

    def _ranking(self, window: list[int], fused: np.ndarray, reasons: list[str] | None,
                 ltr: np.ndarray | None) -> Ranking:
        order = np.argsort(-np.asarray(fused), kind="stable")  # ties keep the base's order
        items = tuple(RankedItem(window[j], round(float(fused[j]), 6), "" if reasons is None else reasons[j])
                      for j in order)
        return Ranking(items, {"weight": self.weight, "scored": 0 if ltr is None else len(ltr)})


def from_settings(settings: Settings, store: Store | None = None, base: Ranker | None = None, *,
                  llm: bool, options: LtrOptions | None = None) -> LtrRanker:
    """The registry's factory: the data folder's model (trained now when missing) and what its features read.
    The store is not used; `base` (the composed base) is the pipeline's, the model reranks `settings.base`."""
    import lightgbm as lgb

    directory, _ = train_model(settings, llm=llm, options=options, progress=False)
    config = read_config(directory)
    if config.data_key != data_key(settings.host.data_webroot) or config.base != settings.base:
        raise ConfigError(f"{directory} was trained for another data folder or base than the settings'")
    catalogue, scorers = load_scorers(settings)
    ratings, movies = read_data_folder(settings.host.data_webroot)
    sources = FeatureSources.build(catalogue, scorers, ratings, movies, item_vectors(settings.host.data_webroot),
                                   load_texts(settings, sources_of(config.features)), config.features)
    booster = lgb.Booster(model_file=str(directory / MODEL_FILE))
    name = "llm-ltr" if llm else "ltr"
    return LtrRanker(name, booster, config, sources, f"{name}-{file_hash(directory / MODEL_FILE)[:10]}")


ltr_ranker = partial(from_settings, llm=False)
llm_ltr_ranker = partial(from_settings, llm=True)
