"""The Python client against a real launcher JVM (the stand-in host over the fixture)."""
import json
import os
import threading

import pytest

from sparrow_llm.bridge.client import (

    BridgeAuthError, BridgeCallError, BridgeClient, BridgeUnavailable, GatewayAddress,

)
from sparrow_llm.bridge.host import HostProcess

from tests.conftest import host_settings


@pytest.fixture()
def client(host):
    with BridgeClient(host.settings.bridge) as c:
        yield c


def test_connect_file_is_private_and_holds_the_address(host):
    path = host.settings.bridge.connect_file
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    address = GatewayAddress.from_connect_file(path)
    assert address.host == "127.0.0.1" and address.port > 0 and address.http_port == host.http_port
    assert address.token not in repr(address)


def test_info_and_users(client):
    info = client.info()
    assert info["movies"] == 755 and info["py4j"] == "0.10.9.9"
    users = client.user_ids()
    assert len(users) >= 600 and users == sorted(users) and 1 in users


def test_candidates_of_each_source(client):
    host = client.candidates(1, "host", 800)
    assert host.known and len(host.movies) == 755  # every loaded movie is a candidate here
    assert all(m.title and m.genres for m in host.movies[:50])
    genre = client.candidates(1, "genre", 100)
    assert 0 < len(genre.movies) <= 100 and len({m.movie_id for m in genre.movies}) == len(genre.movies)
    emb = client.candidates(1, "embedding", 50)
    assert len(emb.movies) == 50
    with pytest.raises(ValueError, match="candidate source"):
        client.candidates(1, "bogus", 10)


def test_embedding_candidates_are_most_similar_first(client):
    import numpy as np

    emb = client.candidates(1, "embedding", 100)
    movies, _ = client.movies([m.movie_id for m in emb.movies], with_emb=True)
    # The user's vector is the host's userEmb; recompute cosines from the movie vectors.
    user_vec = np.array(client.jvm.com.sparrowrecsys.online.datamanager.DataManager.getInstance()
                        .getUserById(1).getEmb().getEmbVector(), dtype=float)
    cos = [float(np.dot(user_vec, v) / np.linalg.norm(user_vec) / np.linalg.norm(v))
           for v in (np.array(movies[m.movie_id].emb) for m in emb.movies)]
    assert all(a >= b - 1e-6 for a, b in zip(cos, cos[1:]))


def test_history_is_sorted_by_time(client):
    h = client.history(1)
    assert h.known and len(h.ratings) > 10
    times = [r.timestamp for r in h.ratings]
    assert times == sorted(times)


def test_unknown_ids_give_empty_lists(client):
    assert not client.history(999_999).known and client.history(999_999).ratings == ()
    c = client.candidates(999_999, "host", 10)
    assert not c.known and c.movies == ()
    found, missing = client.movies([1, 999_999])
    assert 1 in found and missing == [999_999]


def test_user_bundles_one_call_for_many_users(client):
    bundles, movies = client.user_bundles([1, 2, 999_999], "host", 100, with_emb=True)
    assert [b.user_id for b in bundles] == [1, 2, 999_999]
    assert bundles[0].known and not bundles[2].known
    assert len(bundles[0].candidate_ids) == 100
    needed = {m for b in bundles for m in b.candidate_ids} | {r.movie_id for b in bundles for r in b.ratings}
    assert set(movies) <= needed and {m for b in bundles for m in b.candidate_ids} <= set(movies)
    assert any(m.emb for m in movies.values())


def test_wrong_token_is_refused_with_a_reason(host):
    settings = host.settings.replace(bridge={"token": "not-the-token"})
    with pytest.raises(BridgeAuthError, match="refused the token"):
        BridgeClient(settings.bridge).info()


def test_absent_jvm_names_the_address_and_how_to_start(tmp_path):
    settings = host_settings(tmp_path)
    with pytest.raises(BridgeUnavailable, match="no connect file .*sparrow-llm demo"):
        BridgeClient(settings.bridge).info()
    settings.bridge.connect_file.write_text(json.dumps({"host": "127.0.0.1", "port": 1, "token": "x"}))
    with pytest.raises(BridgeUnavailable, match="127.0.0.1:1.*BridgeLauncher"):
        BridgeClient(settings.bridge).info()


def test_launcher_refuses_to_start_without_a_token(built_bridge, tmp_path):
    import subprocess

    from sparrow_llm.bridge.host import LAUNCHER_CLASS, resolve_host

    settings = host_settings(tmp_path)
    proc = HostProcess(settings)
    proc.prepare()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARROW_LLM_TOKEN")}
    env.update(PORT=str(settings.host.http_port), SPARROW_LLM_CONNECT_FILE=str(settings.bridge.connect_file))
    done = subprocess.run([settings.host.java, "-cp", resolve_host(settings).classpath, LAUNCHER_CLASS],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "SPARROW_LLM_TOKEN" in done.stderr
    assert not settings.bridge.connect_file.exists()


def test_client_recovers_after_the_jvm_restarts(built_bridge, tmp_path):
    settings = host_settings(tmp_path)
    proc = HostProcess(settings).start()
    try:
        client = BridgeClient(settings.bridge)
        before = client.candidates(1, "host", 20)
        proc.kill()
        with pytest.raises(BridgeUnavailable):
            client.history(1)
        proc.start()  # a new JVM: new gateway port and token, same connect file
        after = client.candidates(1, "host", 20)
        assert after == before
        client.close()
    finally:
        proc.stop()


def test_py4j_0_10_7_comes_first_on_the_classpath(host):
    """The host jar carries py4j 0.10.7 (through Spark); the bridge's shaded 0.10.9.9 must still serve."""
    import zipfile

    first_jar = host.runtime.classpath.split(os.pathsep)[1]
    with zipfile.ZipFile(first_jar) as jar:
        assert "py4j/GatewayServer.class" in jar.namelist()
        assert "py4j/GatewayServer.class" not in zipfile.ZipFile(host.runtime.bridge_jar).namelist()
    with BridgeClient(host.settings.bridge) as client:
        assert client.info()["py4j"] == "0.10.9.9"


def test_client_is_thread_safe(client):
    results, errors = [], []

    def work(u):
        try:
            results.append((u, len(client.history(u).ratings)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in range(1, 21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 20


def test_java_errors_become_bridge_call_errors(client):
    with pytest.raises(BridgeCallError, match="movies failed"):
        client._call("movies", "not json", False)
