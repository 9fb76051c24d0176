"""The nearline worker against the real stage: misses are queued, ranked within the call budget."""
import json
import urllib.request

import pytest

from sparrow_llm.bridge.client import BridgeClient
from sparrow_llm.bridge.host import HostProcess
from sparrow_llm.pipeline.nearline import CALLS_PER_USER, CallBudget, run_nearline
from sparrow_llm.registry import make_ranker
from sparrow_llm.store import open_default_store

from tests.conftest import host_settings


def get(host, path):
    with urllib.request.urlopen(f"{host.base_url}{path}", timeout=20) as resp:
        return resp.headers.get("X-Sparrow-LLM", ""), resp.read().decode()


@pytest.fixture(scope="module")
def host(built_bridge, tmp_path_factory, fixture_webroot):
    """A host and store of this module's own: its tests count which users have `llm` records."""
    with HostProcess(host_settings(tmp_path_factory.mktemp("nearline"))) as proc:
        yield proc


@pytest.fixture(scope="module")
def llm_ranker(host):
    store = open_default_store(host.settings)
    # The MiniLM stand-in: real work, no network, and fast enough for the flood of users below.
    return store, make_ranker("llm", host.settings.replace(llm={"backend": "local-minilm"}), store)


def test_a_miss_is_served_by_the_host_then_by_the_worker(host, llm_ranker):
    store, ranker = llm_ranker
    user = 11
    assert store.get_record("llm", user) is None
    source, body = get(host, f"/getrecforyou?id={user}&size=10&model=llm")
    assert "host-fallback" in source
    assert body == get(host, f"/getrecforyou?id={user}&size=10&model=emb")[1]
    with BridgeClient(host.settings.bridge) as client:
        summary = run_nearline(host.settings, client=client, store=store, ranker=ranker,
                               budget=CallBudget(0, 10), max_polls=1)
    assert summary.ranked == 1 and summary.llm_calls == CALLS_PER_USER
    source, body = get(host, f"/getrecforyou?id={user}&size=10&model=llm")
    assert "source=store" in source
    assert [m["movieId"] for m in json.loads(body)] == store.get_record("llm", user).movie_ids[:10]


def test_a_flood_of_page_requests_cannot_buy_more_calls_than_the_budget(host, llm_ranker):
    store, ranker = llm_ranker
    users = list(range(100, 300))
    for user in users:  # a flood: every request a different user, each a miss
        get(host, f"/getrecforyou?id={user}&size=5&model=llm")
    for user in users[:50]:  # and repeats, which the stage's queue deduplicates
        get(host, f"/getrecforyou?id={user}&size=5&model=llm")
    budget_calls = 12
    calls_before = ranker.reranker.llm.counters.snapshot()["calls"]
    with BridgeClient(host.settings.bridge) as client:
        summary = run_nearline(host.settings, client=client, store=store, ranker=ranker,
                               budget=CallBudget(0, budget_calls), max_polls=20)
    backend_calls = ranker.reranker.llm.counters.snapshot()["calls"] - calls_before
    assert summary.llm_calls == backend_calls <= budget_calls
    assert summary.ranked == budget_calls // CALLS_PER_USER
    known = sum(1 for u in users if store.get_record("llm", u) is not None)
    assert known == summary.ranked
    assert summary.queued <= len(users) and summary.over_budget == summary.queued - summary.ranked


def test_budget_refills_with_time():
    now = [0.0]
    budget = CallBudget(3600, 4, clock=lambda: now[0])  # one call per second
    assert budget.affordable_users() == 2
    budget.charge(4)
    assert budget.affordable_users() == 0
    now[0] += 2.0
    assert budget.affordable_users() == 1
    with pytest.raises(ValueError):
        CallBudget(10, 1)
