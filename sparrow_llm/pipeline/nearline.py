"""`sparrow-llm serve`: the nearline worker behind the rerank stage.

When the page asks for a nearline model (`llm`) for a user with no fresh record, the stage serves the
host's order at once and offers the user to its bounded, deduplicated miss queue. This worker drains
that queue through the gateway and reranks those users, so the next visit shows the LLM's list. A
call budget (a token bucket of LLM calls) decides how many it may rank: a flood of page requests for
made-up or many user ids buys no more LLM calls than the budget allows; the rest keep the host's order.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..bridge.client import BridgeClient
from ..config import Settings
from ..limits import TokenBucket
from ..rankers.base import Ranker
from ..registry import make_ranker
from ..store import Store
from .rerank import run_rerank

__all__ = ["CallBudget", "NearlineSummary", "run_nearline", "CALLS_PER_USER"]

log = logging.getLogger(__name__)

# PALR's most LLM calls for one user: a profile (when none is stored) and the ranking.
CALLS_PER_USER = 2


class CallBudget:
    """LLM calls as a token bucket: refills at `calls_per_hour`, holds at most `burst`."""

    def __init__(self, calls_per_hour: float, burst: float, clock: Callable[[], float] = time.monotonic):
        if calls_per_hour < 0 or burst < CALLS_PER_USER:
            raise ValueError(f"the budget needs calls_per_hour >= 0 and burst >= {CALLS_PER_USER}")
        self._bucket = TokenBucket(calls_per_hour / 3600.0, burst, clock)

    def affordable_users(self) -> int:
        """How many users may start now if each spends the most a user can."""
        return max(0, int(self._bucket.available() // CALLS_PER_USER))

    def charge(self, calls: int) -> None:
        self._bucket.adjust(calls)


@dataclass
class NearlineSummary:
    polls: int = 0
    queued: int = 0  # (model, user) taken from the stage's miss queue
    ranked: int = 0
    over_budget: int = 0  # left with the host's order: the budget was spent
    llm_calls: int = 0
    ignored: dict[str, int] = field(default_factory=dict)  # misses of models this worker does not rank

    def line(self) -> str:
        return (f"nearline: {self.polls} polls, {self.queued} queued, {self.ranked} ranked, "
                f"{self.over_budget} over budget, {self.llm_calls} LLM calls")


def run_nearline(settings: Settings, *, client: BridgeClient, store: Store, model: str = "llm",
                 ranker: Ranker | None = None, budget: CallBudget | None = None,
                 stop: threading.Event | None = None, max_polls: int | None = None) -> NearlineSummary:
    """Poll the miss queue and rerank within the budget until `stop` is set (or `max_polls` polls)."""
    ns = settings.nearline
    own = ranker is None
    ranker = ranker or make_ranker(model, settings, store)  # once: a retrieval base loads its whole model
    try:
        return _poll(settings, client, store, ranker, budget or CallBudget(ns.calls_per_hour, ns.burst_calls),
                     stop or threading.Event(), max_polls)
    finally:
        if own:
            ranker.close()


def _poll(settings: Settings, client: BridgeClient, store: Store, ranker: Ranker, budget: CallBudget,
          stop: threading.Event, max_polls: int | None) -> NearlineSummary:
    ns = settings.nearline
    summary = NearlineSummary()
    while not stop.is_set() and (max_polls is None or summary.polls < max_polls):
        summary.polls += 1
        users = []
        for queued_model, user_id in client.take_misses(ns.max_batch):
            summary.queued += 1
            if queued_model == ranker.name:
                users.append(user_id)
            else:
                summary.ignored[queued_model] = summary.ignored.get(queued_model, 0) + 1
        affordable = budget.affordable_users()
        now, dropped = users[:affordable], users[affordable:]
        summary.over_budget += len(dropped)
        if dropped:
            log.info("nearline budget spent: %d users keep the host's order", len(dropped))
        if now:
            done = run_rerank(settings, ranker.name, users=now, client=client, store=store, ranker=ranker,
                              progress=False)
            calls = done.counters.get("llm_calls", 0)
            budget.charge(calls)
            summary.llm_calls += calls
            summary.ranked += done.written
            log.info(done.line())
        if not users:
            stop.wait(ns.poll_s)
    return summary
