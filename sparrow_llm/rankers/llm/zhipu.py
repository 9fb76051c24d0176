"""GLM models through the official `zhipuai` SDK, with our own retries, limits and breaker."""
from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.parse
from dataclasses import replace
from typing import Callable

from ...config import ConfigError, LLMSettings
from ...limits import TokenBucket
from .base import SERVICE_ERRORS, ChatBackend, Completion, LLMAuthError, LLMError, LLMRateLimited, LLMTimeout, LLMUnavailable
from .resilience import Breaker, Failed, RetryPolicy, parse_retry_after, server_message

__all__ = ["ZhipuBackend", "ZHIPUAI_BASE_URL", "check_base_url"]

log = logging.getLogger(__name__)

ZHIPUAI_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"


def check_base_url(url: str) -> str:
    """`url` when it is an http(s) URL with a host; else a ConfigError before any job starts."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or bracket
        ok = False
    if not ok:
        raise ConfigError(f"ZHIPUAI_BASE_URL must be an http(s) URL with a host, got {url!r}")
    return url


def _release_later(slots: threading.BoundedSemaphore, after_s: float):
    timer = threading.Timer(after_s, slots.release)
    timer.daemon = True
    return timer.start


class ZhipuBackend(ChatBackend):
    """GLM models through the official `zhipuai` SDK, with our own retries, limits and breaker.

    The SDK's own retries are off (`max_retries=0`) and its 300 s default timeout replaced, so
    that retry, backoff, rate limits and the breaker are decided in one place (`resilience`).
    """

    # Backoff cap: a misbehaving Retry-After must not park a worker for minutes.
    _MAX_DELAY_S = 30.0
    # Rough tokens per prompt character for the tokens-per-minute estimate before the real usage is known.
    _TOKENS_PER_CHAR = 0.3

    def __init__(self, settings: LLMSettings, *, backoff_s: float = 0.5, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        super().__init__()
        if not settings.api_key:
            raise LLMAuthError("no ZhipuAI API key: set ZHIPUAI_API_KEY (or SPARROW_LLM_BACKEND=local to run offline)")
        self.base_url = check_base_url(settings.base_url or ZHIPUAI_BASE_URL)
        import zhipuai  # imported here: the local backends run without it

        self._zhipuai = zhipuai
        self.name = f"zhipuai:{settings.model}"
        self.model = settings.model
        self.concurrency = settings.concurrency
        self._secret = settings.api_key
        self._timeout_s = settings.timeout_s
        self._clock = clock
        # base_url explicit: otherwise the SDK reads ZHIPUAI_BASE_URL from the environment itself.
        self._client = zhipuai.ZhipuAI(api_key=settings.api_key, base_url=self.base_url,
                                       timeout=settings.timeout_s, max_retries=0)
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._breaker = Breaker(settings.breaker_failures, settings.breaker_cooldown_s, clock)
        self._retry = RetryPolicy(settings.max_retries, settings.retry_budget_s, backoff_s=backoff_s,
                                  max_delay_s=self._MAX_DELAY_S, rng=rng, clock=clock, sleep=sleep,
                                  on_retry=lambda: self.counters.add(retries=1))
        self._rps = (TokenBucket(settings.requests_per_s, 1.0, clock, sleep)
                     if settings.requests_per_s else None)
        self._tpm = (TokenBucket(settings.tokens_per_min / 60.0, settings.tokens_per_min, clock, sleep)
                     if settings.tokens_per_min else None)

    def __repr__(self) -> str:  # never the key
        return f"ZhipuBackend({self.name!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float) -> Completion:
        started = self._clock()
        self.counters.add(calls=1)
        try:
            self._breaker.check()
        except LLMUnavailable:
            self.counters.add(rejected=1)
            raise
        try:
            completion = self._retry.call(lambda: self._attempt(messages, max_tokens, temperature))
        except LLMError as error:
            self.counters.add(failures=1)
            if isinstance(error, SERVICE_ERRORS) and self._breaker.failure():
                log.warning("%s: circuit breaker open after repeated failures, last: %s", self.name, error)
            raise
        self._breaker.success()
        return replace(completion, latency_s=self._clock() - started)

    def _attempt(self, messages: list[dict], max_tokens: int, temperature: float) -> Completion:
        """One request within the concurrency and rate limits; raises `Failed`."""
        estimate = len(json.dumps(messages, ensure_ascii=False)) * self._TOKENS_PER_CHAR + max_tokens
        self._slots.acquire()
        release = self._slots.release
        try:
            if self._rps:
                self._rps.acquire(1)
            if self._tpm:
                self._tpm.acquire(estimate)
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, temperature=temperature)
            # ValueError: the SDK lets a body that is not the expected JSON escape as one.
            except (self._zhipuai.ZhipuAIError, ValueError) as exc:
                failed = self._translate(exc)
                if isinstance(failed.error, LLMTimeout):
                    # We stopped waiting; the server may still be working on it. Its slot stays taken for
                    # another timeout, so abandoned requests count against the concurrency limit.
                    release = _release_later(self._slots, self._timeout_s)
                raise failed from None
        finally:
            release()
        try:
            text = response.choices[0].message.content or ""
            prompt_tokens, completion_tokens = int(response.usage.prompt_tokens), int(response.usage.completion_tokens)
        except (AttributeError, IndexError, TypeError, ValueError):
            raise Failed(LLMError(f"{self.name} answered without a message or usage")) from None
        if self._tpm:
            self._tpm.adjust(prompt_tokens + completion_tokens - estimate)
        self.counters.add(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return Completion(text, prompt_tokens, completion_tokens, response.model or self.model, 0.0)

    def _translate(self, exc: Exception) -> Failed:
        """The SDK's exception as ours (never with the key), and whether and when to retry it."""
        z = self._zhipuai
        if isinstance(exc, z.APITimeoutError):
            return Failed(LLMTimeout(f"{self.name}: no answer from {self.base_url} within the timeout"), True)
        if isinstance(exc, z.APIConnectionError):
            return Failed(LLMUnavailable(f"{self.name}: cannot reach {self.base_url}"), True)
        if not isinstance(exc, z.APIStatusError):
            return Failed(LLMError(f"{self.name}: unusable answer ({type(exc).__name__})"))
        status = exc.status_code
        detail = f"HTTP {status}: {server_message(exc.response, self._secret)}"
        if status in (401, 403):
            return Failed(LLMAuthError(f"{self.name} refused the API key ({detail}); check ZHIPUAI_API_KEY"))
        retry_after = parse_retry_after(exc.response.headers)
        if status == 429:
            return Failed(LLMRateLimited(f"{self.name} rate-limited the request ({detail})"), True, retry_after)
        if status >= 500 or status == 408:
            return Failed(LLMUnavailable(f"{self.name} failed ({detail})"), True, retry_after)
        return Failed(LLMError(f"{self.name} rejected the request ({detail})"))
