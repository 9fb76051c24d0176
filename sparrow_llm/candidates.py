"""Candidates: the chosen users, in bulk batches, through the bridge into `UserContext`s."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator, Sequence

from .bridge.client import BridgeClient
from .config import Settings
from .domain import MovieMeta, UserContext
from .schema import COL_MOVIE, HOST_CANDIDATES, MOVIES_CSV, SOURCE_CATALOGUE, SOURCE_HOST
from .store import Store

__all__ = ["select_users", "bridge_client", "user_batches", "fetch_contexts", "loaded_catalogue"]


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


def loaded_catalogue(client: BridgeClient, settings: Settings, with_emb: bool = False) -> dict[int, MovieMeta]:
    """Every movie of the data folder's movies.csv that the host loaded, in one bulk call (the host skips some:
    the real one drops titles with commas). Source `catalogue`'s candidates and movies."""
    import pandas as pd  # only the catalogue source reads movies.csv

    path = settings.host.data_webroot / MOVIES_CSV
    try:
        ids = pd.read_csv(path, usecols=[COL_MOVIE])[COL_MOVIE].dropna().astype("int64").tolist()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the catalogue's movie ids ({exc})") from None
    movies, _ = client.movies(ids, with_emb)
    return movies


def fetch_contexts(client: BridgeClient, store: Store, user_ids: Sequence[int], *, source: str = SOURCE_HOST,
                   with_emb: bool = False, catalogue: dict[int, MovieMeta] | None = None) -> tuple[list[UserContext], int]:
    """One bulk call: the contexts of the users the host knows (with their stored profiles), and how many it
    does not know. The contexts of one call share one movies dict. Source `catalogue` (`catalogue`:
    `loaded_catalogue`, fetched once per run) gives every context the whole loaded catalogue as candidates
    and movies (one shared tuple and dict); any other is the bridge's recall of that name."""
    if source == SOURCE_CATALOGUE:
        if catalogue is None:
            raise ValueError("source 'catalogue' needs the loaded catalogue (candidates.loaded_catalogue)")
        bundles, _ = client.user_bundles(user_ids, SOURCE_HOST, 0, False)
        movies, candidates = catalogue, tuple(catalogue)
    else:
        bundles, movies = client.user_bundles(user_ids, source, HOST_CANDIDATES, with_emb)
        candidates = None
    contexts = [UserContext(b.user_id, b.ratings, candidates or b.candidate_ids, movies, store.get_profile(b.user_id))
                for b in bundles if b.known]
    return contexts, len(bundles) - len(contexts)
