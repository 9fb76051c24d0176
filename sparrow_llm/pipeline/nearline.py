"""`sparrow-llm serve`: the nearline worker behind the rerank stage.

When the page asks for a nearline model (`llm`) for a user with no fresh record, the stage serves the
host's order at once and offers the user to its bounded, deduplicated miss queue. This worker drains
that queue through the gateway and reranks those users, so the next visit shows the LLM's list. A
call budget (a token bucket of LLM calls) decides how many it may rank: a flood of page requests for
made-up or many user ids buys no more LLM calls than the budget allows; the rest keep the host's order.
A launcher restart is not fatal: while the gateway is gone the worker waits, with a backoff of at most
`RECONNECT_MAX_WAIT_S`, and reconnects (the client re-reads the connect file).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import tenacity

from ..bridge.client import BridgeClient, BridgeUnavailable
from ..config import Settings
from ..limits import TokenBucket
from ..rankers.base import Ranker
from ..registry import make_ranker
from ..store import Store
from .rerank import run_rerank

__all__ = ["CallBudget", "NearlineSummary", "run_nearline", "CALLS_PER_USER", "RECONNECT_MAX_WAIT_S"]

log = logging.getLogger(__name__)

# PALR's most LLM calls for one user: a profile (when none is stored) and the ranking.
CALLS_PER_USER = 2
# The longest wait between two tries to reach a gateway that went away (a launcher restart takes seconds).
RECONNECT_MAX_WAIT_S = 30.0


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

    def poll() -> list[int]:
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
        return users

    reconnecting = _reconnecting(stop)
    while not stop.is_set() and (max_polls is None or summary.polls < max_polls):
        summary.polls += 1
        try:
            users = reconnecting(poll)
        except BridgeUnavailable:
            if stop.is_set():  # stopped while waiting for the gateway
                break
            raise
        if reconnecting.statistics.get("attempt_number", 1) > 1:
            log.warning("nearline: the bridge answers again; reconnected")
        if not users:
            stop.wait(ns.poll_s)
    return summary


def _reconnecting(stop: threading.Event) -> tenacity.Retrying:
    """Retries a poll while the gateway is unavailable, waiting 0.5, 1, 2 ... up to RECONNECT_MAX_WAIT_S seconds,
    until it answers or `stop` is set (the wait ends at once then); one warning line when an outage starts."""
    def log_outage(state: tenacity.RetryCallState) -> None:
        level = logging.WARNING if state.attempt_number == 1 else logging.INFO
        log.log(level, "nearline: %s; retrying in %.1f s (backoff up to %.0f s)", state.outcome.exception(),
                state.next_action.sleep, RECONNECT_MAX_WAIT_S)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(BridgeUnavailable),
        wait=tenacity.wait_exponential(multiplier=0.5, max=RECONNECT_MAX_WAIT_S),
        stop=tenacity.stop_when_event_set(stop), sleep=stop.wait, before_sleep=log_outage, reraise=True)
