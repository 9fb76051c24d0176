"""At fusion weight 0 a reranker serves exactly its base's list, for every fixture user, through the in-process
rerank, the Spark rerank and the eval (served lists read back from the stage). The base is `popularity` (the
composition is the same for any base; it trains in a second)."""
import pytest

from sparrow_llm.bridge.client import BridgeClient
from sparrow_llm.evaluation.run import EvalOptions, run_eval
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.pipeline.rerank_spark import run_rerank_spark
from sparrow_llm.store import open_store

from tests.conftest import host_settings
from sparrow_llm.bridge.host import HostProcess
from sparrow_llm.config import StoreSettings


@pytest.fixture(scope="module")
def zero(built_bridge, tmp_path_factory, fixture_webroot):
    """A host of this module's own; `llm` on the local model at weight 0 over `popularity`."""
    tmp = tmp_path_factory.mktemp("weight-zero")
    settings = host_settings(tmp).replace(base="popularity", llm={"backend": "local", "fusion_weight": 0.0})
    with HostProcess(settings) as proc:
        with BridgeClient(settings.bridge) as client:
            users = client.user_ids()
        yield proc.settings.replace(base="popularity", llm={"backend": "local", "fusion_weight": 0.0}), users


def _records(store, model, users):
    return {u: (r.movie_ids if (r := store.get_record(model, u)) else None) for u in users}


def test_in_process_and_spark_serve_the_bases_lists_at_weight_zero(zero, spark, tmp_path):
    settings, users = zero
    store = open_store(StoreSettings(kind="file", dir=tmp_path / "store"))
    base = run_rerank(settings, "popularity", store=store, progress=False)
    assert base.written > 500
    expected = _records(store, "popularity", users)
    assert run_rerank(settings, "llm", store=store, progress=False).counters.get("llm_calls", 0) == 0
    assert _records(store, "llm", users) == expected
    spark_store = open_store(StoreSettings(kind="file", dir=tmp_path / "spark"))
    run_rerank_spark(settings, "llm", store=spark_store, spark=spark, progress=False)
    assert _records(spark_store, "llm", users) == expected


def test_the_eval_scores_llm_at_weight_zero_as_its_base(zero, tmp_path):
    settings, _ = zero
    result = run_eval(settings, EvalOptions(out=tmp_path / "eval", rankers=("llm",), negatives=20, progress=False))
    for variant in result.variants:
        arms = {arm.label: arm for arm in variant.arms}
        assert arms["llm"].base == "popularity"
        assert arms["llm"].lists == arms["popularity"].lists, variant.name
        delta = arms["llm"].scores.base_delta
        assert (delta.mean, delta.low, delta.high) == (0.0, 0.0, 0.0)
