"""The `run_*` paths: each reads top to bottom, from settings to records in the store."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

from ..bridge.client import BridgeClient
from ..candidates import bridge_client, fetch_contexts, user_batches
from ..config import Settings
from ..domain import Record, UserContext
from ..progress import progress_bar
from ..rankers.base import Ranker
from ..registry import make_ranker
from ..store import Store, open_default_store

__all__ = ["RerankSummary", "run_rerank", "rank_contexts"]

log = logging.getLogger(__name__)


_COUNTED_OUTCOMES = ("parse", "cache")
_SUMMED_USAGE = ("llm_calls", "prompt_tokens", "completion_tokens")


@dataclass
class RerankSummary:
    model: str
    users: int = 0
    written: int = 0
    skipped: int = 0  # nothing to rank on (unknown user, no liked history): the host's order stays
    failed: int = 0
    wall_s: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, meta: dict) -> None:
        """Totals of what rankers report per user: outcomes (`parse ok`, `cache hit`) and usage."""
        for key in _COUNTED_OUTCOMES:
            if key in meta:
                name = f"{key} {meta[key]}"
                self.counters[name] = self.counters.get(name, 0) + 1
        for key in _SUMMED_USAGE:
            if key in meta:
                self.counters[key] = self.counters.get(key, 0) + int(meta[key])

    def merge(self, other: "RerankSummary") -> "RerankSummary":
        """Adds the counts of `other` (one Spark partition's users) to these; wall time stays this one's."""
        self.users += other.users
        self.written += other.written
        self.skipped += other.skipped
        self.failed += other.failed
        for name, value in other.counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        return self

    def line(self) -> str:
        rate = self.users / self.wall_s if self.wall_s else 0.0
        extra = "".join(f", {k} {v}" for k, v in sorted(self.counters.items()))
        return (f"{self.model}: {self.users} users, {self.written} written, {self.skipped} skipped, "
                f"{self.failed} failed{extra} in {self.wall_s:.1f} s ({rate:.0f} users/s)")


def run_rerank(settings: Settings, model: str, *, users: Sequence[int] | None = None,
               sample: int | None = None, client: BridgeClient | None = None,
               store: Store | None = None, ranker: Ranker | None = None,
               progress: bool = True) -> RerankSummary:
    """Candidates from the host's recall layer -> ranker -> store, in bulk batches of users."""
    store = store or open_default_store(settings)
    ranker = ranker or make_ranker(model, settings, store)
    summary = RerankSummary(model=ranker.name)
    started = time.perf_counter()
    try:
        with bridge_client(settings, client) as client:
            batches = user_batches(client, settings, users, sample)
            with progress_bar(total=sum(map(len, batches)), desc=f"rerank {ranker.name}", unit="user",
                              enabled=progress) as bar:
                for user_batch in batches:
                    contexts, unknown = fetch_contexts(client, store, user_batch, source=ranker.candidate_source,
                                                    with_emb=ranker.needs_emb)
                    summary.skipped += unknown
                    rank_contexts(ranker, contexts, store, summary)
                    summary.users += len(user_batch)
                    bar.update(len(user_batch))
    finally:
        summary.wall_s = time.perf_counter() - started
    return summary


def rank_contexts(ranker: Ranker, contexts: list[UserContext], store: Store, summary: RerankSummary) -> None:
    """Ranks one batch of users, writes their records in one store call, and counts them into `summary`
    (all but `users`, which the caller counts as it picks users)."""
    records = []
    for ctx, ranking in zip(contexts, _rank_batch(ranker, contexts, summary)):
        if ranking is _FAILED:
            continue
        if ranking is None or not ranking.items:
            summary.skipped += 1
            continue
        summary.count(ranking.meta)
        records.append(Record(ranker.name, ctx.user_id, ranking.items, ranker.backend, ranker.version,
                              meta=ranking.meta))
    summary.written += store.put_records(records)


def _rank_batch(ranker: Ranker, contexts: list[UserContext], summary: RerankSummary):
    try:
        return ranker.rank_many(contexts)
    except Exception:
        # One bad batch must not stop the job: count it, and the stage keeps serving the host's order.
        log.exception("%s failed on users %s", ranker.name, [c.user_id for c in contexts])
        summary.failed += len(contexts)
        return [_FAILED] * len(contexts)


_FAILED = object()
