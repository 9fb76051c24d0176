"""Candidates: the chosen users, in bulk batches, through the bridge into `UserContext`s."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator, Sequence

from .bridge.client import BridgeClient
from .config import Settings
from .domain import UserContext
from .schema import HOST_CANDIDATES
from .store import Store

__all__ = ["select_users", "bridge_client", "user_batches", "fetch_contexts"]


def select_users(all_users: Sequence[int], users: Sequence[int] | None = None,
                 sample: int | None = None, seed: int = 0) -> list[int]:
    """`users` as given (in order), else a seeded sample of `sample` users, else all users."""
    if users:
        return list(dict.fromkeys(int(u) for u in users))
    chosen = sorted(all_users)
    if sample is not None and sample < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, sample))
    return chosen


@contextmanager
def bridge_client(settings: Settings, client: BridgeClient | None = None) -> Iterator[BridgeClient]:
    """`client` as given, or a new one that is closed on the way out."""
    if client is not None:
        yield client
        return
    with BridgeClient(settings.bridge) as own:
        yield own


def user_batches(client: BridgeClient, settings: Settings, users: Sequence[int] | None,
                 sample: int | None) -> list[list[int]]:
    """The chosen users (`select_users`) cut into the bulk calls' batches."""
    chosen = select_users(client.user_ids() if not users else (), users, sample, settings.seed)
    size = max(1, settings.bridge.batch_users)
    return [chosen[i:i + size] for i in range(0, len(chosen), size)]


def fetch_contexts(client: BridgeClient, store: Store, user_ids: Sequence[int], *, source: str = "host",
                   with_emb: bool = False) -> tuple[list[UserContext], int]:
    """One bulk call: the contexts of the users the host knows (with their stored profiles), and how many it
    does not know. The contexts of one call share one movies dict."""
    bundles, movies = client.user_bundles(user_ids, source, HOST_CANDIDATES, with_emb)
    contexts = [UserContext(b.user_id, b.ratings, b.candidate_ids, movies, store.get_profile(b.user_id))
                for b in bundles if b.known]
    return contexts, len(bundles) - len(contexts)
