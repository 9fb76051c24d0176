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
from typing import Any, ClassVar, Mapping, TypeVar

from ..config import ConfigError

__all__ = ["ModelConfig", "PretrainedModel", "CONFIG_FILE", "WEIGHTS_FILE"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

C = TypeVar("C", bound="ModelConfig")
M = TypeVar("M", bound="PretrainedModel")


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
        try:
            config = cls.from_dict(json.loads(path.read_text()))
        except ValueError as exc:  # bad JSON, or a field out of range (ConfigError is one)
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
