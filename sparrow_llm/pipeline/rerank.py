"""The `run_*` paths: each reads top to bottom, from settings to records in the store."""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Sequence

from ..bridge.client import BridgeClient
from ..candidates import bridge_client, fetch_contexts, loaded_catalogue, user_batches
from ..config import ConfigError, Settings
from ..domain import Record, UserContext
from ..progress import progress_bar
from ..rankers.base import Ranker
from ..registry import make_ranker, prepare_profiles
from ..schema import PARSE_FALLBACK, SOURCE_CATALOGUE
from ..store import Store, StoreError, open_default_store

__all__ = ["RerankSummary", "run_rerank", "rank_contexts", "profile_users"]

log = logging.getLogger(__name__)


_COUNTED_OUTCOMES = ("parse", "cache")
_SUMMED_USAGE = ("llm_calls", "prompt_tokens", "completion_tokens", "llm_ms")


@dataclass
class RerankSummary:
    model: str
    users: int = 0
    written: int = 0
    skipped: int = 0  # nothing to rank on (unknown user, no liked history): the host's order stays
    failed: int = 0
    kept: int = 0  # a fallback ranking not written over a good record younger than the max age
    llm_failed: int = 0  # users whose LLM call failed (their ranking is the host's order)
    llm_answered: int = 0  # users whose LLM calls all answered
    last_error: str = ""  # the last such failure, for the line a failed run ends with
    profiles: str = ""  # the summary line of the profile step run first (`run_rerank(profiles=True)`), if any
    wall_s: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def all_llm_failed(self) -> bool:
        """Every LLM call this run asked for failed (a wrong key, a dead server): nothing it wrote is the LLM's."""
        return self.llm_failed > 0 and self.llm_answered == 0

    def count(self, meta: dict) -> None:
        """Totals of what rankers report per user: outcomes (`parse ok`, `cache hit`) and usage."""
        if "error" in meta:
            self.llm_failed += 1
            self.last_error = str(meta.get("error_message") or meta["error"])
        elif meta.get("llm_calls"):
            self.llm_answered += 1
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
        self.kept += other.kept
        self.llm_failed += other.llm_failed
        self.llm_answered += other.llm_answered
        self.last_error = other.last_error or self.last_error
        for name, value in other.counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        return self

    def line(self) -> str:
        rate = self.users / self.wall_s if self.wall_s else 0.0
        extra = "".join(f", {k} {v}" for k, v in sorted(self.counters.items()))
        kept = f", {self.kept} good records kept" if self.kept else ""
        return (f"{self.model}: {self.users} users, {self.written} written, {self.skipped} skipped, "
                f"{self.failed} failed{kept}{extra} in {self.wall_s:.1f} s ({rate:.0f} users/s)")


def run_rerank(settings: Settings, model: str, *, users: Sequence[int] | None = None,
               sample: int | None = None, client: BridgeClient | None = None,
               store: Store | None = None, ranker: Ranker | None = None, progress: bool = True,
               profiles: bool = False) -> RerankSummary:
    """Candidates from the host's recall layer -> ranker -> store, in bulk batches of users. A caller that ranks
    again and again (the nearline worker, the eval) passes its `ranker` once built (`registry.make_ranker`) and
    closes it; one built here is closed here. With `profiles` (the `rerank` command, the demo), the chosen users'
    missing or stale profiles are made first when the model shows profiles (`registry.prepare_profiles`); the
    summary's wall time leaves that step out (its own line says its time)."""
    store = store or open_default_store(settings)
    summary = RerankSummary(model=model)
    started = time.perf_counter()
    with ExitStack() as stack:
        if ranker is None:
            ranker = make_ranker(model, settings, store)
            stack.callback(ranker.close)
        summary.model = ranker.name
        try:
            client = stack.enter_context(bridge_client(settings, client))
            batches = user_batches(client, settings, users, sample)
            chosen = [u for b in batches for u in b]
            if profiles:
                started += profile_users(settings, model, chosen, summary, progress)
            catalogue = (loaded_catalogue(client, settings, ranker.needs_emb)
                         if ranker.candidate_source == SOURCE_CATALOGUE else None)
            bar = stack.enter_context(progress_bar(total=len(chosen), desc=f"rerank {ranker.name}",
                                                   unit="user", enabled=progress))
            for user_batch in batches:
                contexts, unknown = fetch_contexts(client, store, user_batch, source=ranker.candidate_source,
                                                   with_emb=ranker.needs_emb, catalogue=catalogue)
                summary.skipped += unknown
                rank_contexts(ranker, contexts, store, summary, keep_fresh_s=settings.store.max_age_s)
                summary.users += len(user_batch)
                bar.update(len(user_batch))
        finally:
            summary.wall_s = time.perf_counter() - started
    return summary


def profile_users(settings: Settings, model: str, users: Sequence[int], summary: RerankSummary,
                  progress: bool) -> float:
    """The model's profile step (`registry.prepare_profiles`) over `users`, its line kept in `summary`; the seconds
    it took (none when no user is chosen: an empty list would mean every user)."""
    if not users:
        return 0.0
    started = time.perf_counter()
    summary.profiles = prepare_profiles(model, settings, list(users), progress=progress) or ""
    return time.perf_counter() - started


def rank_contexts(ranker: Ranker, contexts: list[UserContext], store: Store, summary: RerankSummary, *,
                  keep_fresh_s: int = 0) -> None:
    """Ranks one batch of users, writes their records in one store call, and counts them into `summary`
    (all but `users`, which the caller counts as it picks users). A fallback ranking (the host's order)
    never replaces a good record younger than `keep_fresh_s` (0: always written)."""
    records = []
    for ctx, ranking in zip(contexts, _rank_batch(ranker, contexts, summary)):
        if ranking is _FAILED:
            continue
        if ranking is None or not ranking.items:
            summary.skipped += 1
            continue
        summary.count(ranking.meta)
        if ranking.is_fallback and _good_record_is_fresh(store, ranker.name, ctx.user_id, keep_fresh_s):
            summary.kept += 1
            continue
        records.append(Record(ranker.name, ctx.user_id, ranking.items, ranker.backend, ranker.version,
                              meta=ranking.meta))
    summary.written += store.put_records(records)


def _good_record_is_fresh(store: Store, model: str, user_id: int, max_age_s: int) -> bool:
    if max_age_s <= 0:
        return False
    try:
        old = store.get_record(model, user_id)
    except StoreError:
        return False  # unreadable: nothing good to keep
    if old is None or old.meta.get("parse") == PARSE_FALLBACK:
        return False
    return 0 <= time.time() * 1000 - old.created_at_ms < max_age_s * 1000


def _rank_batch(ranker: Ranker, contexts: list[UserContext], summary: RerankSummary):
    try:
        return ranker.rank_many(contexts)
    except ConfigError:  # a setting that cannot work (a model that cannot load) fails every batch alike: stop
        raise
    except Exception:
        # One bad batch must not stop the job: count it, and the stage keeps serving the host's order.
        log.exception("%s failed on users %s", ranker.name, [c.user_id for c in contexts])
        summary.failed += len(contexts)
        return [_FAILED] * len(contexts)


_FAILED = object()
