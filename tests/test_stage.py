"""The rerank stage over real HTTP: records written by Python, served by the launcher's Jetty."""
import json
import time
import urllib.error
import urllib.request

import pytest

from sparrow_llm.demo import check_stage
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.store import open_default_store
from sparrow_llm.domain import RankedItem, Record


def get(host, path):
    with urllib.request.urlopen(f"{host.base_url}{path}", timeout=20) as resp:
        return resp.status, dict(resp.headers), resp.read().decode("utf-8")


def ids(body):
    return [m["movieId"] for m in json.loads(body)]


@pytest.fixture(scope="module")
def ranked(host):
    """`recent` for a few users through the real bridge, into the host's store."""
    summary = run_rerank(host.settings, "recent", users=[1, 2, 3, 999_999], progress=False)
    assert summary.written == 3 and summary.skipped == 1 and summary.failed == 0
    return open_default_store(host.settings)


def test_plugin_order_then_host_order(host, ranked):
    record = ranked.get_record("recent", 1)
    status, headers, body = get(host, "/getrecforyou?id=1&size=32&model=recent")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert ids(body) == record.movie_ids[:32]
    assert "source=store" in headers.get("X-Sparrow-LLM", "")
    assert check_stage(host.base_url, "recent", 1, ranked).ok


def test_short_record_is_filled_from_host_order(host, ranked):
    ranked.put_records([Record("short", 1, (RankedItem(2, 1.0), RankedItem(3, 0.5)), "test", "v1")])
    _, _, emb = get(host, "/getrecforyou?id=1&size=800&model=emb")
    _, _, served = get(host, "/getrecforyou?id=1&size=10&model=short")
    host_rest = [m for m in ids(emb) if m not in (2, 3)]
    assert ids(served) == [2, 3] + host_rest[:8]
    # Same JSON as the host writes for the same movie.
    host_movie = next(m for m in json.loads(emb) if m["movieId"] == 2)
    assert json.loads(served)[0] == host_movie
    assert served.endswith("\n")


def test_no_record_gives_the_host_ranking(host, ranked):
    _, _, emb = get(host, "/getrecforyou?id=4&size=32&model=emb")
    status, headers, body = get(host, "/getrecforyou?id=4&size=32&model=recent")
    assert status == 200 and body == emb
    assert "host-fallback" in headers.get("X-Sparrow-LLM", "")


def test_stale_record_gives_the_host_ranking(host, ranked):
    old = int((time.time() - 30 * 24 * 3600) * 1000)
    ranked.put_records([Record("stale", 1, (RankedItem(2, 1.0),), "test", "v1", created_at_ms=old)])
    _, _, emb = get(host, "/getrecforyou?id=1&size=12&model=emb")
    assert get(host, "/getrecforyou?id=1&size=12&model=stale")[2] == emb


def test_corrupt_record_file_gives_the_host_ranking(host, ranked):
    ranked.put_records([Record("broken", 2, (RankedItem(2, 1.0),), "test", "v1")])
    path = ranked.root / "records" / "broken" / "2.json"
    path.write_text(path.read_text()[:20])
    _, _, emb = get(host, "/getrecforyou?id=2&size=12&model=emb")
    status, _, body = get(host, "/getrecforyou?id=2&size=12&model=broken")
    assert status == 200 and body == emb
    assert "broken" in host.log_tail(200)  # one log line names what was skipped


def test_rewritten_record_is_served_at_once(host, ranked):
    ranked.put_records([Record("fresh", 3, (RankedItem(2, 1.0),), "test", "v1")])
    assert ids(get(host, "/getrecforyou?id=3&size=3&model=fresh")[2])[0] == 2
    ranked.put_records([Record("fresh", 3, (RankedItem(3, 1.0),), "test", "v2")])
    assert ids(get(host, "/getrecforyou?id=3&size=3&model=fresh")[2])[0] == 3


@pytest.mark.parametrize("query", ["id=abc&size=32&model=recent", "id=1&size=abc&model=recent",
                                   "id=1&size=-1&model=recent", "id=1&size=32", "size=32&model=recent"])
def test_bad_numbers_keep_host_behaviour(host, ranked, query):
    status, _, body = get(host, f"/getrecforyou?{query}")
    assert status == 200 and body.strip() == ""  # the host's answer: 200 with an empty body


def test_unknown_user_is_an_empty_list(host, ranked):
    status, _, body = get(host, "/getrecforyou?id=999999&size=32&model=recent")
    assert status == 200 and json.loads(body) == []


def test_other_models_go_to_the_host_unchanged(host, ranked):
    _, headers, body = get(host, "/getrecforyou?id=1&size=5&model=xyz")
    assert "X-Sparrow-LLM" not in headers
    assert len(json.loads(body)) == 5


def test_compare_api(host, ranked):
    _, _, body = get(host, "/sparrow-llm/api/compare?id=1&size=5")
    data = json.loads(body)
    assert data["userId"] == 1 and len(data["host"]["movies"]) == 5
    recent = next(m for m in data["models"] if m["model"] == "recent")
    assert [i["movie"]["movieId"] for i in recent["items"]] == ranked.get_record("recent", 1).movie_ids[:5]
    assert recent["items"][0]["reason"].startswith("close to")
    with pytest.raises(urllib.error.HTTPError) as bad:
        get(host, "/sparrow-llm/api/compare?id=abc")
    assert bad.value.code == 400 and "error" in json.loads(bad.value.read())
