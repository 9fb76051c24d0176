"""The sampled-negatives table (PALR / LlamaRec protocol): the hidden movie among N drawn never-rated movies."""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import schema
from ..domain import MovieMeta, UserContext, served_order
from ..pipeline.rerank import RerankSummary, rank_contexts
from ..progress import progress_bar
from ..rankers.base import Ranker
from ..store import Store
from .protocol import EvalUser
from .report import Arm, Variant

__all__ = ["sampled_variant"]


def _sampled_candidates(user: EvalUser, never_rated: np.ndarray, negatives: int, seed: int) -> list[int]:
    """The hidden movie and `negatives` movies the user never rated, in the host's recall order,
    then (outside the recall) in the order drawn. Seeded per user: a user's candidates do not
    depend on which other users are evaluated."""
    rng = np.random.default_rng([seed, user.user_id])
    drawn = [int(m) for m in rng.choice(never_rated, size=min(negatives, len(never_rated)), replace=False)]
    mixed = [user.holdout.movie_id, *drawn]
    rng.shuffle(mixed)
    pool = set(mixed)
    return served_order((m for m in user.candidate_ids if m in pool), mixed)


def _rank_sampled(ranker: Ranker, contexts: Sequence[UserContext], store: Store, batch: int,
                  progress: bool) -> tuple[dict[int, list[int]], RerankSummary]:
    """Rank as `run_rerank` does (records into `store`, failures counted, a composed reranker on its base's top K),
    then read each record back, keep its candidates (a catalogue ranker's record holds other movies too) and
    fill it up with the rest of the candidates, as the stage fills a record with the host's order."""
    summary = RerankSummary(model=ranker.name)
    started = time.perf_counter()
    with progress_bar(total=len(contexts), desc=f"rank {ranker.name} (sampled)", unit="user", enabled=progress) as bar:
        for start in range(0, len(contexts), batch):
            chunk = list(contexts[start:start + batch])
            rank_contexts(ranker, chunk, store, summary)
            summary.users += len(chunk)
            bar.update(len(chunk))
    summary.wall_s = time.perf_counter() - started
    lists = {}
    for ctx in contexts:
        record = store.get_record(ranker.name, ctx.user_id)
        pool = set(ctx.candidate_ids)
        lists[ctx.user_id] = served_order([m for m in record.movie_ids if m in pool] if record else (),
                                          ctx.candidate_ids)
    return lists, summary


def sampled_variant(users: Sequence[EvalUser], source_ratings: pd.DataFrame, catalogue: Mapping[int, MovieMeta],
                    host_lists: Mapping[str, dict[int, list[int]]], rankers: Sequence[Ranker],
                    plugin_arms: Sequence[Arm], store: Store,
                    sampled_store: Store, negatives: int, seed: int, batch: int,
                    progress: bool) -> Variant:
    rated_ever = source_ratings.groupby(schema.COL_USER)[schema.COL_MOVIE].agg(set)
    loaded = np.array(sorted(catalogue))
    kept = [u for u in users if u.holdout.movie_id in catalogue]
    candidates = {u.user_id: _sampled_candidates(u, loaded[~np.isin(loaded, list(rated_ever[u.user_id]))],
                                                 negatives, seed) for u in kept}
    pools = {u: set(c) for u, c in candidates.items()}
    arms = [Arm(name, "host", {u: served_order((m for m in served[u] if m in pools[u]), candidates[u])
                               for u in candidates})
            for name, served in host_lists.items()]
    for ranker, arm in zip(rankers, plugin_arms):
        contexts = [UserContext(u.user_id, u.ratings, tuple(candidates[u.user_id]), catalogue,
                                store.get_profile(u.user_id)) for u in kept]
        lists, summary = _rank_sampled(ranker, contexts, sampled_store, batch, progress)
        arms.append(Arm(ranker.name, ranker.backend, lists, rank_s=summary.wall_s, counters=dict(summary.counters),
                        summary=summary.line(), base=arm.base, ablated=arm.ablated))
    left_out = len(users) - len(kept)
    return Variant(
        "sampled", f"Sampled negatives (hidden + {negatives}, PALR/LlamaRec protocol)",
        f"Candidates: the hidden movie and {negatives} movies the user never rated, drawn from the movies the "
        f"host loads; not comparable with the table above. {left_out} of {len(users)} users are left out "
        f"because the host does not load their hidden movie.",
        {u.user_id: u.holdout.movie_id for u in kept}, arms)
