import json
import logging
import threading

import pytest

from sparrow_llm.config import StoreSettings
from sparrow_llm.domain import Profile, RankedItem, Record, RecordError
from sparrow_llm.store import FileStore, RedisStore, StoreError, StoreUnavailable, open_store

from .conftest import free_port


def _record(user=1, model="recent", ids=(10, 20, 30), version="v1", created=1_700_000_000_000):
    return Record(model, user, tuple(RankedItem(m, 1.0 / (i + 1), f"reason {m}") for i, m in enumerate(ids)),
                  backend="test", version=version, created_at_ms=created)


@pytest.fixture(params=["file", "redis"])
def store(request, tmp_path):
    if request.param == "file":
        yield FileStore(tmp_path / "store")
    else:
        server = request.getfixturevalue("redis_db")
        s = RedisStore(StoreSettings(kind="redis", redis_port=server.port))
        yield s
        s.close()


def test_record_round_trip(store):
    rec = _record(user=7)
    assert store.put_records([rec]) == 1
    back = store.get_record("recent", 7)
    assert back == rec
    assert back.movie_ids == [10, 20, 30]
    assert store.get_record("recent", 8) is None
    assert store.get_record("llm", 7) is None
    assert store.models() == ["recent"]


def test_overwrite_replaces_whole_record(store):
    store.put_records([_record(ids=(1, 2, 3, 4, 5))])
    store.put_records([_record(ids=(9,), version="v2")])
    back = store.get_record("recent", 1)
    assert back.movie_ids == [9] and back.version == "v2"


def test_profiles_and_cache(store):
    p = Profile(3, "Loves Drama.", "local-minilm", "profile.v1", "abc123", meta={"tokens": 5})
    store.put_profiles([p])
    assert store.get_profile(3) == p
    assert store.get_profile(4) is None
    key = "f" * 64
    assert store.cache_get(key) is None
    store.cache_put(key, {"text": "[]", "usage": [1, 2]})
    assert store.cache_get(key) == {"text": "[]", "usage": [1, 2]}


def test_record_json_is_the_contract(tmp_path):
    FileStore(tmp_path).put_records([_record()])
    data = json.loads((tmp_path / "records" / "recent" / "1.json").read_text())
    assert set(data) == {"model", "userId", "backend", "version", "createdAt", "items", "meta"}
    assert data["items"][0] == {"movieId": 10, "score": 1.0, "reason": "reason 10"}


def test_bad_records_are_refused():
    with pytest.raises(RecordError, match="model name"):
        _record(model="Bad Name!")
    with pytest.raises(RecordError, match="repeats"):
        _record(ids=(1, 1))


def test_corrupt_file_is_ignored_with_a_log_line(tmp_path, caplog):
    store = FileStore(tmp_path)
    store.put_records([_record()])
    path = tmp_path / "records" / "recent" / "1.json"
    path.write_text(path.read_text()[:25])  # truncated
    with caplog.at_level(logging.WARNING):
        assert store.get_record("recent", 1) is None
    assert "unreadable" in caplog.text and "1.json" in caplog.text


def test_two_writers_never_tear_a_record(store):
    """Two writers race on one key while a reader polls: every read is one of the two whole records."""
    a, b = _record(ids=tuple(range(1, 300)), version="a"), _record(ids=tuple(range(500, 900)), version="b")
    store.put_records([a])
    stop = threading.Event()
    seen, errors = set(), []

    def write(rec):
        while not stop.is_set():
            store.put_records([rec])

    def read():
        for _ in range(300):
            got = store.get_record("recent", 1)
            if got not in (a, b):
                errors.append(got)
            seen.add(got.version if got else None)
        stop.set()

    threads = [threading.Thread(target=write, args=(r,)) for r in (a, b)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert seen <= {"a", "b"}


def test_file_store_leaves_no_temp_files(tmp_path):
    store = FileStore(tmp_path)
    store.put_records(_record(user=u) for u in range(20))
    names = [p.name for p in (tmp_path / "records" / "recent").iterdir()]
    assert sorted(names) == sorted(f"{u}.json" for u in range(20))


def test_redis_batch_is_one_transaction_with_ttl(redis_db):
    store = RedisStore(StoreSettings(kind="redis", redis_port=redis_db.port, ttl_s=60))
    store.put_records([_record(user=u) for u in range(5)])
    client = redis_db.client()
    assert 0 < client.ttl("sllm:rec:recent:3") <= 60
    assert client.smembers("sllm:models") == {b"recent"}
    # Host keys are never touched.
    client.set("uEmb:1", "0.1 0.2")
    store.put_records([_record(user=1)])
    assert client.get("uEmb:1") == b"0.1 0.2"
    commands = []
    monitor_done = threading.Event()

    def monitor():
        with client.monitor() as m:
            monitor_done.set()
            for cmd in m.listen():
                commands.append(cmd["command"].split()[0].upper())
                if commands[-1] == "EXEC":
                    return

    t = threading.Thread(target=monitor)
    t.start()
    monitor_done.wait(5)
    store.put_records([_record(user=u) for u in range(3)])
    t.join(10)
    assert commands[0] == "MULTI" and commands[-1] == "EXEC"
    assert commands.count("SET") == 3


def test_redis_down_is_a_clear_error():
    store = RedisStore(StoreSettings(kind="redis", redis_port=free_port()))
    with pytest.raises(StoreUnavailable, match="not reachable"):
        store.put_records([_record()])
    with pytest.raises(StoreUnavailable):
        store.get_record("recent", 1)


def test_open_store_registry(tmp_path):
    assert isinstance(open_store(StoreSettings(), tmp_path), FileStore)
    assert isinstance(open_store(StoreSettings(kind="redis")), RedisStore)
    with pytest.raises(StoreError, match="SPARROW_LLM_STORE_DIR"):
        open_store(StoreSettings())
