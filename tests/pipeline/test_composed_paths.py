"""The composed ranker on every path. At fusion weight 0 a reranker serves exactly its base's list, for every
fixture user, through the in-process rerank, the Spark rerank and the eval (served lists read back from the
stage); a Spark partition leaves no thread behind. The base is `popularity` (the composition is the same for
any base; it trains in a second)."""
import threading
from types import SimpleNamespace

import pytest

from sparrow_llm.bridge.client import BridgeClient
from sparrow_llm.bridge.host import HostProcess
from sparrow_llm.candidates import loaded_catalogue
from sparrow_llm.config import StoreSettings
from sparrow_llm.evaluation.run import EvalOptions, run_eval
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.pipeline.rerank_spark import _fetch_wave, _rerank_partition, run_rerank_spark
from sparrow_llm.rankers.llm.local_lm import LocalLMBackend
from sparrow_llm.schema import SOURCE_CATALOGUE
from sparrow_llm.store import open_store

from tests.conftest import host_settings


@pytest.fixture(scope="module")
def zero(built_bridge, tmp_path_factory, fixture_webroot):
    """A host of this module's own; `llm` on the local model at weight 0 over `popularity`, without the model's
    reasons (they change no order, and cost a generation per user: tests/rankers/palr test them)."""
    tmp = tmp_path_factory.mktemp("weight-zero")
    llm = {"backend": "local", "fusion_weight": 0.0, "reasons": 0}
    settings = host_settings(tmp).replace(base="popularity", llm=llm)
    with HostProcess(settings) as proc:
        with BridgeClient(settings.bridge) as client:
            users = client.user_ids()
        yield proc.settings.replace(base="popularity", llm=llm), users


def _records(store, model, users):
    return {u: (r.movie_ids if (r := store.get_record(model, u)) else None) for u in users}


def test_in_process_and_spark_serve_the_bases_lists_at_weight_zero(zero, spark, tmp_path):
    settings, users = zero
    store = open_store(StoreSettings(kind="file", dir=tmp_path / "store"))
    base = run_rerank(settings, "popularity", store=store, progress=False)
    assert base.written > 500
    expected = _records(store, "popularity", users)
    llm = run_rerank(settings, "llm", store=store, progress=False)
    # No forward pass at weight 0, and no cache read either: the summary says neither.
    assert llm.counters.get("llm_calls", 0) == 0 and not [k for k in llm.counters if k.startswith("cache")]
    assert _records(store, "llm", users) == expected
    spark_store = open_store(StoreSettings(kind="file", dir=tmp_path / "spark"))
    run_rerank_spark(settings, "llm", store=spark_store, spark=spark, progress=False)
    assert _records(spark_store, "llm", users) == expected


def test_the_eval_scores_llm_at_weight_zero_as_its_base(zero, tmp_path):
    settings, _ = zero
    # A seeded sample of users: the equality is per user, and the in-process and Spark test covers them all.
    result = run_eval(settings, EvalOptions(out=tmp_path / "eval", rankers=("llm",), sample=120, negatives=20,
                                            progress=False))
    assert len(result.users) == 120
    for variant in result.variants:
        arms = {arm.label: arm for arm in variant.arms}
        assert arms["llm"].base == "popularity"
        assert arms["llm"].lists == arms["popularity"].lists, variant.name
        delta = arms["llm"].scores.base_delta
        assert (delta.mean, delta.low, delta.high) == (0.0, 0.0, 0.0)


def test_no_thread_outlives_a_spark_partition(zero, tmp_path):
    # One partition of a wave, run here so its threads can be counted: the local model's batcher threads start
    # for the forward passes (weight 0.5) and end with the partition's ranker.
    settings, users = zero
    settings = settings.replace(llm={"fusion_weight": 0.5})
    store = open_store(StoreSettings(kind="file", dir=tmp_path / "store"))
    with BridgeClient(settings.bridge) as client:
        contexts, movies, _ = _fetch_wave(client, store, SOURCE_CATALOGUE, False,
                                          loaded_catalogue(client, settings), [users[:3]])
    before = {t.ident for t in threading.enumerate()}
    seen = []
    original = LocalLMBackend.score_options
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalLMBackend, "score_options",
                      lambda self, requests: seen.append(threading.active_count()) or original(self, requests))
        (summary,) = _rerank_partition(settings, "llm", store, SimpleNamespace(value=movies), iter(contexts))
    assert summary.written == 3 and summary.counters["llm_calls"] == 3
    assert seen and max(seen) > len(before)  # the batcher's threads ran...
    assert {t.ident for t in threading.enumerate()} == before  # ...and none is left
