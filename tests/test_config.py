import dataclasses

import pytest

from sparrow_llm.config import ConfigError, LLMSettings, Settings


def test_defaults_need_no_environment():
    s = Settings.from_env({})
    assert s.store.kind == "file" and s.llm.backend == "local" and s.bridge.gateway_port == 0
    assert s.bridge.token is None


def test_environment_is_read_once_into_typed_fields(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    s = Settings.from_env({"SPARROW_LLM_STORE": "redis", "SPARROW_LLM_REDIS_PORT": "6400",
                           "SPARROW_LLM_TOKEN_FILE": str(token_file), "SPARROW_LLM_TTL_S": "60",
                           "ZHIPUAI_API_KEY": "abc.def-key", "SPARROW_LLM_HOME": str(tmp_path)})
    assert (s.store.kind, s.store.redis_port, s.store.ttl_s) == ("redis", 6400, 60)
    assert s.bridge.token == "s3cret-token"
    assert s.bridge.connect_file == tmp_path / "private" / "gateway.json"
    # Secrets never show in a repr (logs, tracebacks).
    assert "s3cret-token" not in repr(s) and "abc.def-key" not in repr(s)


@pytest.mark.parametrize("env, message", [
    ({"SPARROW_LLM_STORE": "mongo"}, "SPARROW_LLM_STORE"),
    ({"SPARROW_LLM_REDIS_PORT": "six"}, "SPARROW_LLM_REDIS_PORT must be an integer"),
    ({"SPARROW_LLM_CONCURRENCY": "0"}, "SPARROW_LLM_CONCURRENCY must be >= 1"),
    ({"SPARROW_LLM_TOKEN_FILE": "/nonexistent/token"}, "SPARROW_LLM_TOKEN_FILE"),
])
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_replace_updates_one_field_of_a_section():
    s = Settings().replace(store={"kind": "redis"}, seed=7)
    assert s.store.kind == "redis" and s.store.redis_port == 6379 and s.seed == 7


def test_the_base_ranker_is_a_model_name_or_the_host():
    assert (Settings.from_env({}).base, Settings.from_env({}).base_k) == ("ease-recent", 20)
    s = Settings.from_env({"SPARROW_LLM_BASE": "sasrec", "SPARROW_LLM_BASE_K": "30"})
    assert (s.base, s.base_k) == ("sasrec", 30)
    assert Settings.from_env({"SPARROW_LLM_BASE": "host"}).base is None
    with pytest.raises(ConfigError, match="SPARROW_LLM_BASE must be"):
        Settings.from_env({"SPARROW_LLM_BASE": "../etc"})
    with pytest.raises(ConfigError, match="SPARROW_LLM_BASE_K must be >= 1"):
        Settings.from_env({"SPARROW_LLM_BASE_K": "0"})


@pytest.mark.parametrize("env, change", [
    ({"SPARROW_LLM_STORE": "mongo"}, {"store": {"kind": "mongo"}}),
    ({"SPARROW_LLM_REDIS_PORT": "six"}, {"store": {"redis_port": "six"}}),
    ({"PORT": "70000"}, {"host": {"http_port": 70000}}),
    ({"SPARROW_LLM_CONCURRENCY": "0"}, {"llm": {"concurrency": 0}}),
    ({"SPARROW_LLM_TIMEOUT_S": "-1"}, {"llm": {"timeout_s": -1.0}}),
    ({"SPARROW_LLM_RPS": "inf"}, {"llm": {"requests_per_s": float("inf")}}),
    ({"SPARROW_LLM_VERBALIZER_K": "27"}, {"llm": {"verbalizer_k": 27}}),
    ({"SPARROW_LLM_FUSION_WEIGHT": "1.5"}, {"llm": {"fusion_weight": 1.5}}),
    ({"SPARROW_LLM_NEARLINE_POLL_S": "0"}, {"nearline": {"poll_s": 0.0}}),
    ({"SPARROW_LLM_BASE": "../etc"}, {"base": "../etc"}),
    ({"SPARROW_LLM_BASE_K": "0"}, {"base_k": 0}),
])
def test_replace_refuses_what_the_environment_refuses_with_the_same_message(env, change):
    with pytest.raises(ConfigError) as from_env:
        Settings.from_env(env)
    with pytest.raises(ConfigError) as replaced:
        Settings().replace(**change)
    assert str(replaced.value) == str(from_env.value)
    assert next(iter(env)) in str(replaced.value)


def test_every_construction_checks_dataclasses_replace_and_fields_no_variable_sets():
    with pytest.raises(ConfigError, match="SPARROW_LLM_MAX_RETRIES must be >= 0, got -1"):
        dataclasses.replace(LLMSettings(), max_retries=-1)
    with pytest.raises(ConfigError, match="bridge.batch_users must be >= 1, got 0"):
        Settings().replace(bridge={"batch_users": 0})
    with pytest.raises(ConfigError, match="SPARROW_LLM_LOCAL_FINETUNED must be true or false"):
        LLMSettings(local_finetuned=2)


def test_values_are_normalised_as_the_environment_reads_them(tmp_path):
    s = Settings().replace(store={"ttl_s": 0, "dir": str(tmp_path)}, llm={"local_threads": 0})
    assert s.store.ttl_s is None and s.llm.local_threads is None  # 0: none, as SPARROW_LLM_TTL_S=0 reads
    assert s.store.dir == tmp_path  # a str path becomes a Path
    env = Settings.from_env({"SPARROW_LLM_TTL_S": "0", "SPARROW_LLM_LOCAL_FINETUNED": "0"})
    assert env.store.ttl_s is None and env.llm.local_finetuned is False
