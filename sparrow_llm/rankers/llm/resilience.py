"""What keeps a remote LLM call safe: a circuit breaker, Retry-After, and server text without the key."""
from __future__ import annotations

import email.utils
import threading
import time
from typing import Callable

from .base import LLMError, LLMUnavailable

__all__ = ["Breaker", "Failed", "parse_retry_after", "server_message"]


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


def parse_retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None when absent or bad."""
    raw = headers.get("retry-after") if headers is not None else None
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def server_message(response, secret: str) -> str:
    """The API's own error code and message, short, with the key scrubbed should the server echo it."""
    try:
        error = response.json().get("error") or {}
        text = f"{error.get('code', '')} {error.get('message', '')}".strip()
    except (ValueError, AttributeError):
        text = response.text
    return " ".join(text.split())[:200].replace(secret, "***")


class Failed(Exception):
    """One failed attempt: the error to raise if it is the last, and whether and when to retry."""

    def __init__(self, error: LLMError, retryable: bool = False, retry_after: float | None = None):
        super().__init__(str(error))
        self.error, self.retryable, self.retry_after = error, retryable, retry_after
