"""LLM backends behind PALR's two steps (profile a user, rank candidates).

`Backend.profile` and `Backend.rank` (and a text model's `ChatBackend.explain`) take a rendered `PromptRequest`
and return a `Completion` whose text the caller parses; a request's `stop` says where its answer ends, so a local model
stops generating there instead of running to the cap. Backends are registered by import string in `BACKENDS`; each one
lives in its own module (`zhipu`: the GLM API; `local_lm`: a small instruct model on the CPU, which can also
score candidates by their labels' logits; `local_minilm`: an offline stand-in without a language model).
"""
from __future__ import annotations

import importlib
import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

from ...config import ConfigError, LLMSettings
from ...domain import MovieMeta, Rated, movie_label

__all__ = [
    "Completion", "Counters", "Backend", "ChatBackend",
    "LLMError", "LLMAuthError", "LLMTimeout", "LLMRateLimited", "LLMUnavailable", "SERVICE_ERRORS",
    "BACKENDS", "make_backend", "PromptRequest", "IndexList", "LabelScores", "LabelScorer",
]

_INDEX = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class IndexList:
    """The format of an answer that is a compact JSON list of distinct indexes (`[3,0,12]`): 1 to `most` of them,
    each below `size`. A local model is held to it while it generates (`decoding.AnswerFormat`), so its answer
    always parses and stops once it is whole."""

    size: int
    most: int

    def holds(self, text: str) -> bool:
        """Whether `text` is such an answer, or the start of one."""
        if not text.startswith("["):
            return False
        body, closed = (text[1:-1], True) if text.endswith("]") else (text[1:], False)
        *picked, last = body.split(",")
        if not all(_INDEX.fullmatch(p) and int(p) < self.size for p in picked):
            return False
        used = {int(p) for p in picked}
        if len(used) < len(picked) or len(picked) >= min(self.most, self.size):
            return False  # a repeat, or a comma after the last pick the list may hold
        if closed:
            return bool(_INDEX.fullmatch(last)) and int(last) < self.size and int(last) not in used
        if last and not _INDEX.fullmatch(last):
            return False
        return any(str(i).startswith(last) for i in range(self.size) if i not in used)


@dataclass(frozen=True)
class PromptRequest:
    """One rendered PALR step: the chat messages and the inputs they were rendered from.

    A chat backend sends `messages`; the local backend works on the structured fields.
    """

    step: str  # "profile", "rank", "choose" or "reasons"
    version: str
    messages: tuple[Mapping[str, str], ...]
    max_tokens: int
    history: tuple[Rated, ...]  # oldest first, already cut to the most recent rows
    candidates: tuple[MovieMeta, ...] = ()
    profile: str = ""
    top_n: int = 0
    options: tuple[str, ...] = ()  # "choose": the one-token label shown before each candidate ("A", "B", ...)
    stop: str = ""  # a regular expression: the answer ends with its first match ("": at the model's end or cap)
    # The answer's first characters, written for the model (`["` of a JSON list of strings): a local model goes on
    # from them and its answer starts with them; a chat API is asked without them.
    prefill: str = ""
    answer: IndexList | None = None  # a format a local model is held to token by token (None: free text)

    @property
    def text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)

    @property
    def labels(self) -> list[str]:
        return [movie_label(m) for m in self.candidates]


class LLMError(RuntimeError):
    """The LLM could not answer this request (a bad request, a malformed answer)."""


class LLMAuthError(LLMError):
    """The API key is missing or refused."""


class LLMTimeout(LLMError):
    """No answer within the timeout (after retries)."""


class LLMRateLimited(LLMError):
    """The API kept answering 429 (after retries)."""


class LLMUnavailable(LLMError):
    """The API is unreachable or failing (5xx, connection errors), or the circuit breaker is open."""


# Errors that say the service (or our access to it) is unhealthy; they count towards the breaker.
# A plain LLMError (HTTP 400, a malformed answer) is about one request and does not.
SERVICE_ERRORS = (LLMAuthError, LLMTimeout, LLMRateLimited, LLMUnavailable)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_s: float


class Counters:
    """Thread-safe totals of one backend, for job summaries."""

    FIELDS = ("calls", "retries", "failures", "rejected", "prompt_tokens", "completion_tokens")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.FIELDS, 0)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._values[name] += delta

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class Backend(ABC):
    """One LLM; `name` is recorded in every store record, `concurrency` bounds useful parallel calls."""

    name: str
    model: str
    concurrency: int = 1
    # A short hash of the model's own files (a local model's), "" for an API: answers are cached by it, so a
    # changed file never serves another model's cached scores under the same name.
    weights_key: str = ""

    def __init__(self) -> None:
        self.counters = Counters()

    @abstractmethod
    def profile(self, request: PromptRequest) -> Completion:
        """PALR step 1: a short natural-language profile of the user's taste."""

    @abstractmethod
    def rank(self, request: PromptRequest) -> Completion:
        """PALR step 2: the answer the rank prompt asks for (`[index, ...]`, best first)."""

    def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class LabelScores:
    """What a `LabelScorer` read for some requests: per request, one log-probability per option."""

    scores: tuple[tuple[float, ...], ...]
    prompt_tokens: int  # all requests together
    model: str
    latency_s: float  # the forward passes' time spent on these requests (their share of shared batches)


class LabelScorer(ABC):
    """A backend that reads logits (a local model; an API gives none): the verbalizer of LlamaRec.

    For each "choose" request, the log-probability of each option's label as the answer's first token
    (softmax over the options only), from one forward pass per request.
    """

    @abstractmethod
    def score_options(self, requests: list[PromptRequest]) -> LabelScores: ...


class ChatBackend(Backend):
    """A backend that completes free text: both steps send their rendered prompt."""

    # Greedy decoding: answers are cached by prompt, so the same prompt should give the same answer.
    temperature = 0.0

    @abstractmethod
    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float) -> Completion: ...

    def profile(self, request: PromptRequest) -> Completion:
        return self._ask(request)

    def rank(self, request: PromptRequest) -> Completion:
        return self._ask(request)

    def explain(self, request: PromptRequest) -> Completion:
        """One short reason per movie of a served list (`["reason", ...]`), in one call."""
        return self._ask(request)

    def _ask(self, request: PromptRequest) -> Completion:
        # Copies: the zhipuai SDK rewrites message contents in place.
        return self.complete([dict(m) for m in request.messages], max_tokens=request.max_tokens,
                             temperature=self.temperature)


# SPARROW_LLM_BACKEND -> "module:factory"; factory(settings) -> Backend.
BACKENDS: dict[str, str] = {
    "zhipuai": "sparrow_llm.rankers.llm.zhipu:ZhipuBackend",
    "local": "sparrow_llm.rankers.llm.local_lm:from_settings",
    "local-minilm": "sparrow_llm.rankers.llm.local_minilm:from_settings",
}


def make_backend(settings: LLMSettings) -> Backend:
    try:
        target = BACKENDS[settings.backend]
    except KeyError:
        raise ConfigError(f"SPARROW_LLM_BACKEND must be one of {', '.join(sorted(BACKENDS))}, "
                          f"got {settings.backend!r}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(settings)
