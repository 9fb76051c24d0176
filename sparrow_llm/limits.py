"""Rate limits: one token bucket, for the LLM's requests and tokens per time and the nearline's call budget.

Kept as our own small class: the limiters on PyPI block or refuse, but none lets a caller take an
estimate first and settle the real cost afterwards (`adjust`, for tokens per minute), nor ask how
much is affordable now without taking it (`available`, for the nearline's batches).
"""
from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """`rate` units per second with bursts up to `capacity`; `acquire` blocks until enough are left."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._rate, self._capacity = rate, capacity
        self._clock, self._sleep = clock, sleep
        self._level = capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
        self._stamp = now

    def acquire(self, amount: float) -> None:
        amount = min(amount, self._capacity)  # a request larger than the bucket would wait forever
        while True:
            with self._lock:
                self._refill()
                if self._level >= amount:
                    self._level -= amount
                    return
                wait = (amount - self._level) / self._rate
            self._sleep(wait)

    def available(self) -> float:
        """Units that could be taken now without waiting."""
        with self._lock:
            self._refill()
            return self._level

    def adjust(self, amount: float) -> None:
        """Take `amount` more (or give back, if negative) once the real cost is known."""
        with self._lock:
            self._refill()
            self._level = min(self._capacity, self._level - amount)
