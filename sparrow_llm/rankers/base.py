"""What every ranker is: a protocol the pipelines call, and a base class with the default batch path."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from ..config import Settings

from ..domain import Ranking, UserContext

__all__ = ["Ranker", "BaseRanker", "MakeBase", "base_key", "unit_rows"]


class Ranker(Protocol):
    name: str  # the `model` value the stage serves it under
    backend: str
    version: str
    needs_emb: bool  # whether contexts must carry item2vec vectors
    candidate_source: str  # what the bridge recalls for it: "host" (the host's candidates) or "catalogue"

    def rank(self, ctx: UserContext) -> Ranking | None:
        """Ranks `ctx.candidate_ids` only; None when there is nothing to rank on (the stage then serves the
        host's order)."""

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]: ...

    def close(self) -> None:
        """Releases threads and clients; a later call may start them again."""


class BaseRanker:
    """Default `rank_many`: one user at a time. Rankers that batch (a model's forward pass) override it."""

    name: str
    backend: str
    version: str
    needs_emb = False
    candidate_source = "host"  # what the bridge recalls for it
    window: int | None = None  # a reranker: how many of its base's top it reranks (None: `Settings.base_k`)

    def rank(self, ctx: UserContext) -> Ranking | None:
        raise NotImplementedError

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        return [self.rank(ctx) for ctx in contexts]

    def close(self) -> None:
        """Nothing to release by default."""


# The base ranker of a data folder's settings (`registry.make_base`), as the registry hands it to a reranker's
# preparation step; None: the host's candidates.
MakeBase = Callable[[Settings], "Ranker | None"]


def base_key(base: Ranker | None) -> str:
    """What a reranker's tuned artefact (an adapter, a fusion weight) depends on of the base it was tuned over: its
    version (name and checkpoint content), `host` for the host's candidates."""
    return "host" if base is None else base.version


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    return m / np.where(norms == 0, 1.0, norms)
