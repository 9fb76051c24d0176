import pytest

from sparrow_llm.config import ConfigError, Settings


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
