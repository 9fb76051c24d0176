"""Reading the lists back as the stage serves them: `/getrecforyou` over HTTP, as the host's page asks."""
from __future__ import annotations

import json
import time
from typing import Sequence

from ..bridge.host import http_get
from ..progress import progress_bar
from .protocol import EvalUser

__all__ = ["served_lists"]


def served_lists(base_url: str, model: str, users: Sequence[EvalUser], progress: bool,
                 timeout_s: float) -> tuple[dict[int, list[int]], float, int]:
    """Each user's list from /getrecforyou (size = the user's candidate count), the time the
    requests took, and how many came from the store (the stage's `X-Sparrow-LLM` header)."""
    lists, seconds, from_store = {}, 0.0, 0
    for user in progress_bar(iterable=users, desc=f"serve {model}", unit="user", enabled=progress):
        url = f"{base_url}/getrecforyou?id={user.user_id}&size={len(user.candidate_ids)}&model={model}"
        started = time.perf_counter()
        _, headers, body = http_get(url, timeout_s)
        source = headers.get("X-Sparrow-LLM", "")
        seconds += time.perf_counter() - started
        from_store += source.endswith("source=store")
        lists[user.user_id] = [int(m["movieId"]) for m in json.loads(body)]
    return lists, seconds, from_store
