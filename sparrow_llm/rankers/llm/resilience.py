"""What keeps a remote LLM call safe: retries (tenacity), a circuit breaker, Retry-After within a time budget,
and server text without the key.

The breaker is our own: pybreaker holds its lock for the whole guarded call, which would serialise every
LLM call of a worker's thread pool. Our own code is also kept where tenacity stops: the SDK's Retry-After handling is off (its retries
are), so `parse_retry_after` reads the header, and `RetryPolicy` makes a server's Retry-After win over the
jittered backoff, but only while it fits the call's time budget (a `Retry-After: 100000` fails the call
at once instead of parking a worker).
"""
from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from typing import Callable

import threading

import tenacity

from .base import LLMError, LLMUnavailable

__all__ = ["Breaker", "Failed", "RetryPolicy", "parse_retry_after", "server_message", "REDACTED"]

log = logging.getLogger(__name__)

REDACTED = "***"
_SERVER_TEXT = 200  # characters of the server's own error text kept in a message
_KEY_PREFIX = 6  # a run of the key's first characters this long counts as the key


class Failed(Exception):
    """One failed attempt: the error to raise if it is the last, and whether and when to retry."""

    def __init__(self, error: LLMError, retryable: bool = False, retry_after: float | None = None):
        super().__init__(str(error))
        self.error, self.retryable, self.retry_after = error, retryable, retry_after


class Breaker:
    """Opens after `threshold` consecutive service failures and refuses calls for `cooldown_s`.

    After the cooldown calls go through again; the failure count stays at the threshold, so one
    more failure reopens it at once and one success closes it.
    """

    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float]):
        self._threshold, self._cooldown_s, self._clock = threshold, cooldown_s, clock
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            left = self._open_until - self._clock()
            if left > 0:
                raise LLMUnavailable(f"circuit breaker open for another {left:.1f} s after "
                                     f"{self._failures} consecutive failures")

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = 0.0

    def failure(self) -> bool:
        """Count a failure; True when this one opened the breaker."""
        with self._lock:
            self._failures += 1
            if self._failures >= self._threshold and self._open_until <= self._clock():
                self._open_until = self._clock() + self._cooldown_s
                return True
            return False


class RetryPolicy:
    """`max_retries` retries of retryable failures, waiting the server's Retry-After or a fully jittered
    exponential backoff (`backoff_s * 2**n`), capped at `max_delay_s`, all within `budget_s` per call."""

    def __init__(self, max_retries: int, budget_s: float, *, backoff_s: float = 0.5, max_delay_s: float = 30.0,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, on_retry: Callable[[], None] = lambda: None):
        self.max_retries, self.budget_s = max_retries, budget_s
        self._backoff_s, self._max_delay_s = backoff_s, max_delay_s
        self._rng = rng or random.Random()
        self._clock, self._sleep, self._on_retry = clock, sleep, on_retry

    def call(self, attempt: Callable[[], object]):
        """`attempt()` until it returns or its `Failed` is final; raises that failure's error."""
        started = self._clock()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, Failed) and exc.retryable),
            stop=tenacity.stop_after_attempt(self.max_retries + 1) | (lambda state: self._out_of_budget(state, started)),
            wait=lambda state: self._delay(state, started),
            sleep=self._sleep, before_sleep=self._log, reraise=True)
        try:
            return retrying(attempt)
        except Failed as failed:
            raise failed.error from None

    def _remaining(self, started: float) -> float:
        return self.budget_s - (self._clock() - started)

    def _out_of_budget(self, state: tenacity.RetryCallState, started: float) -> bool:
        # A server that asks for longer than the budget has left is not waited for at all.
        wanted = state.outcome.exception().retry_after
        return self._remaining(started) <= 0 or (wanted is not None and wanted > self._remaining(started))

    def _delay(self, state: tenacity.RetryCallState, started: float) -> float:
        wanted = state.outcome.exception().retry_after
        delay = wanted if wanted is not None else self._rng.uniform(0, self._backoff_s * 2 ** (state.attempt_number - 1))
        return max(0.0, min(delay, self._max_delay_s, self._remaining(started)))

    def _log(self, state: tenacity.RetryCallState) -> None:
        self._on_retry()
        log.warning("%s; retry %d/%d in %.2f s", state.outcome.exception().error, state.attempt_number,
                    self.max_retries, state.next_action.sleep)


def parse_retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None when absent or bad."""
    raw = headers.get("retry-after") if headers is not None else None
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None


def server_message(response, secret: str) -> str:
    """The API's own error code and message, short. The key is scrubbed before the text is cut, so a cut
    can never leave part of it behind."""
    try:
        error = response.json().get("error") or {}
        text = f"{error.get('code', '')} {error.get('message', '')}".strip()
    except (ValueError, AttributeError):
        text = response.text
    text = " ".join(str(text).split())
    if secret:
        text = text.replace(secret, REDACTED)
        if len(secret) >= _KEY_PREFIX:  # a server that echoes the key cut short: its first characters on
            text = re.sub(re.escape(secret[:_KEY_PREFIX]) + r"\S*", REDACTED, text)
    return text[:_SERVER_TEXT]
