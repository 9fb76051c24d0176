"""A trained model's folder and the one way to write and read it, named as in transformers.

A model folder holds `config.json` (the model's `ModelConfig`) and `model.safetensors` (its weights), and
whatever else the model needs beside them (ClickPrompt: its feature space). Every model saves with
`save_pretrained(directory)` and loads with the classmethod `from_pretrained(directory)`; its config does the
same with config.json alone. Torch-free, as every configuration module is: the CLI shows a model's defaults
without loading torch.

huggingface_hub's `PyTorchModelHubMixin` does not fit: it writes a README.md model card into every folder,
saves the whole state dict (ClickPrompt leaves its frozen PLM out, which reloads from its own checkpoint)
and serves torch modules only (the linear models are numpy).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence, TypeVar

from ..config import ConfigError

__all__ = ["ModelConfig", "PretrainedModel", "read_json", "checkpoint_problem", "CONFIG_FILE", "WEIGHTS_FILE"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

C = TypeVar("C", bound="ModelConfig")
M = TypeVar("M", bound="PretrainedModel")


def read_json(path: Path | str) -> Any:
    """A JSON file of a checkpoint or a calibration; a torn one is one ConfigError naming the file and the cause."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def checkpoint_problem(directory: Path, files: Sequence[str], *, data_key: str | None = None,
                       record: str | None = None) -> str | None:
    """Why `directory` cannot be reused as a checkpoint, None when it can: one of `files` is missing, a .json one
    does not parse, a .safetensors one's header cannot be read (`safetensors.safe_open` also checks that the
    file covers every tensor: a truncated or zero-byte file fails), or the data key recorded in `record` (a
    JSON file of `files`) is not `data_key` (a checkpoint copied under another data folder's key)."""
    from safetensors import SafetensorError, safe_open

    for name in files:
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        try:
            if name.endswith(".json"):
                read_json(path)
            elif name.endswith(".safetensors"):
                with safe_open(str(path), framework="np"):
                    pass
        except (ConfigError, SafetensorError, OSError) as exc:
            return str(exc) if isinstance(exc, ConfigError) else f"{path}: {exc}"
    if data_key is not None and record is not None:
        recorded = read_json(directory / record).get("data_key")
        if recorded != data_key:
            return (f"{directory / record} records the data key {recorded}, not this data folder's {data_key} "
                    "(a checkpoint of other data)")
    return None


class ModelConfig:
    """Base of a model's config, a frozen dataclass that checks its fields in `__post_init__` (raising
    `ConfigError`): a config that exists is valid, however it was made (constructor, `replace`, config.json)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a {cls.__name__} is a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a field missing
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def save_pretrained(self, directory: Path | str) -> Path:
        """`config.json` in `directory` (made when missing); returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.to_dict(), indent=2))
        return directory

    @classmethod
    def from_pretrained(cls: type[C], directory: Path | str, **overrides: Any) -> C:
        """The config saved in `directory`, `overrides` replacing some fields. A file that is not a valid
        config is one ConfigError naming it."""
        path = Path(directory) / CONFIG_FILE
        data = read_json(path)
        try:
            config = cls.from_dict(data)
        except ValueError as exc:  # a field unknown, missing or out of range (ConfigError is one)
            raise ConfigError(f"{path}: {exc}") from None
        return config.replace(**overrides) if overrides else config


class PretrainedModel:
    """`save_pretrained` / `from_pretrained` of a model folder: the config is written and read here, the
    weights (and any other file) by the model's `_save_weights` / `_from_weights`."""

    config_class: ClassVar[type[ModelConfig]]
    config: ModelConfig

    def save_pretrained(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_weights(directory)
        return self.config.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls: type[M], directory: Path | str, **overrides: Any) -> M:
        """The saved model; `overrides` change config fields (ClickPrompt: `fusion="ctr"` builds the CTR part only)."""
        directory = Path(directory)
        return cls._from_weights(cls.config_class.from_pretrained(directory, **overrides), directory)

    def _save_weights(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _from_weights(cls: type[M], config: Any, directory: Path) -> M:
        raise NotImplementedError
