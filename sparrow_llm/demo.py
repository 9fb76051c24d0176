"""`sparrow-llm demo`: host + launcher up, one plugin model ranked for every user, its list served
through the host's own `/getrecforyou`; `--check` verifies that over HTTP and exits 0 only if it holds.

The default model is `llm`, PALR on the local model: the base's preparation (its training, when none is kept), the
model's (the fusion weight with the base, chosen on validation users, when none is kept), the users' profiles,
then the ranking of the composed stage. Each phase prints its line with its time."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from typing import Callable, Sequence

from .bridge.client import BridgeClient
from .bridge.host import HostProcess, http_get
from .config import HostSettings, Settings
from .domain import served_order
from .pipeline.rerank import run_rerank
from .registry import base_of, prepare_model
from .schema import DEMO_MODEL, DEMO_USERS, HOST_CANDIDATES
from .store import Store, open_default_store

__all__ = ["run_demo", "check_stage", "StageCheck", "PAGE_SIZE"]

PAGE_SIZE = 32  # what user.html asks /getrecforyou for


@dataclass(frozen=True)
class StageCheck:
    ok: bool
    message: str


def _get_json(url: str, timeout_s: float):
    status, headers, body = http_get(url, timeout_s)
    return status, headers, json.loads(body.decode("utf-8"))


def check_stage(base_url: str, model: str, user_id: int, store: Store, fallback_model: str = "emb",
                timeout_s: float = HostSettings.http_timeout_s) -> StageCheck:
    """The page's request for `model` must come back in the stored order, then the host's order."""
    record = store.get_record(model, user_id)
    if record is None:
        return StageCheck(False, f"no {model} record for user {user_id} in {store!r}")
    query = f"{base_url}/getrecforyou?id={user_id}"
    _, headers, served = _get_json(f"{query}&size={PAGE_SIZE}&model={model}", timeout_s)
    _, _, host = _get_json(f"{query}&size={HOST_CANDIDATES}&model={fallback_model}", timeout_s)
    host_ids = [m["movieId"] for m in host]
    known = set(host_ids)
    expected = served_order((m for m in record.movie_ids if m in known), host_ids)[:PAGE_SIZE]
    got = [m["movieId"] for m in served]
    if got != expected:
        return StageCheck(False, f"model={model} served {got[:8]}... but the plugin order is {expected[:8]}...")
    if host and set(served[0]) != set(host[0]):
        return StageCheck(False, f"movie JSON fields differ from the host's: {sorted(served[0])} vs {sorted(host[0])}")
    if got == host_ids[:PAGE_SIZE]:
        return StageCheck(False, f"model={model} served exactly the host's {fallback_model} order")
    source = headers.get("X-Sparrow-LLM", "?")
    return StageCheck(True, f"/getrecforyou?id={user_id}&size={PAGE_SIZE}&model={model} came through the stage "
                            f"({source}): {len(got)} movies in the plugin's order, host JSON fields kept")


def demo_users(all_ids: Sequence[int], user_id: int, users: Sequence[int] | None, all_users: bool) -> list[int] | None:
    """The users the demo ranks: `users`, every user (None), or the first DEMO_USERS ids and the one shown."""
    if all_users:
        return None
    chosen = list(users) if users else sorted(all_ids)[:DEMO_USERS]
    return chosen if user_id in chosen else [*chosen, user_id]


def run_demo(settings: Settings, model: str = DEMO_MODEL, *, check: bool = False, user_id: int = 1,
             users: Sequence[int] | None = None, all_users: bool = False, progress: bool = True,
             echo: Callable[[str], None]) -> int:
    started = time.perf_counter()
    with HostProcess(settings) as host:
        echo(f"host ({host.runtime.kind}) at {host.base_url}, log {host.log_path} "
             f"(up in {time.perf_counter() - started:.0f} s)")
        store = open_default_store(settings)
        with BridgeClient(settings.bridge) as client:
            for name in filter(None, (base_of(model, settings), model)):  # the base's first: the model's needs it
                phase = time.perf_counter()
                prepared = prepare_model(name, settings, progress=progress)
                if prepared:
                    echo(f"{prepared} (preparation of {name}: {time.perf_counter() - phase:.0f} s)")
            chosen = demo_users(client.user_ids(), user_id, users, all_users)
            summary = run_rerank(settings, model, users=chosen, client=client, store=store, progress=progress,
                                 profiles=True)
            if summary.profiles:
                echo(summary.profiles)
            echo(summary.line())
        echo(f"demo ready in {time.perf_counter() - started:.0f} s")
        if check:
            result = check_stage(host.base_url, model, user_id, store, timeout_s=settings.host.http_timeout_s)
            echo(("PASS: " if result.ok else "FAIL: ") + result.message)
            return 0 if result.ok else 1
        echo(f"compare the host's list with the plugin's: {host.base_url}/sparrow-llm/compare.html?id={user_id}")
        if host.runtime.kind == "sparrowrecsys":
            echo(f"the host's own page: {host.base_url}/user.html?id={user_id}&model={model}")
        echo("Ctrl-C to stop")
        host.wait_until_interrupted()
        echo("stopping the host")
    return 0
