"""The retrieval models' configurations, torch-free and checked on construction: `LinearConfig` (popularity,
EASE; `linear`) and `SASRecConfig` (`sasrec`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...config import ConfigError
from ..pretrained import ModelConfig
from .interactions import INTERACTIONS

__all__ = ["LinearConfig", "SASRecConfig", "POPULARITY", "EASE"]

POPULARITY, EASE = "popularity", "ease"


def _at_least(config: object, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= minimum):
            raise ConfigError(f"{type(config).__name__}.{name} must be a number >= {minimum:g}, got {value!r}")


@dataclass(frozen=True)
class LinearConfig(ModelConfig):
    kind: str  # POPULARITY or EASE
    l2: float = 0.0  # EASE's lambda
    disliked_weight: float = 1.0  # a rating below 3.5 (1: binary, every rating counts; 0: liked ones only)
    recency_tau: float | None = None  # None: every interaction weighs 1
    recency_floor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in (POPULARITY, EASE):
            raise ConfigError(f"LinearConfig.kind must be {POPULARITY!r} or {EASE!r}, got {self.kind!r}")
        _at_least(self, 0.0, "l2", "disliked_weight", "recency_floor")
        if self.kind == EASE and self.l2 <= 0:
            raise ConfigError(f"EASE needs lambda (LinearConfig.l2) > 0, got {self.l2}")
        if self.disliked_weight > 1 or self.recency_floor > 1:
            raise ConfigError("LinearConfig.disliked_weight and recency_floor must be in [0, 1]")
        if self.recency_tau is not None and not (isinstance(self.recency_tau, (int, float)) and self.recency_tau > 0):
            raise ConfigError(f"LinearConfig.recency_tau must be None or > 0, got {self.recency_tau!r}")

    def describe(self) -> str:
        if self.kind == POPULARITY:
            return "users per movie"
        recency = "" if self.recency_tau is None else f", recency tau {self.recency_tau:g} floor {self.recency_floor:g}"
        return f"lambda {self.l2:g}, disliked weight {self.disliked_weight:g}{recency}"


@dataclass(frozen=True)
class SASRecConfig(ModelConfig):
    n_items: int
    max_len: int = 50
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    init_std: float = 0.02
    interactions: str = "all"  # which of a user's ratings form the sequence (interactions.INTERACTIONS)
    seed: int = 0

    def __post_init__(self) -> None:
        _at_least(self, 1, "n_items", "max_len", "hidden", "blocks", "heads")
        _at_least(self, 0.0, "dropout", "init_std")
        if self.dropout >= 1:
            raise ConfigError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.hidden % self.heads:
            raise ConfigError(f"SASRecConfig.hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.interactions not in INTERACTIONS:
            raise ConfigError(f"SASRecConfig.interactions must be one of {INTERACTIONS}, got {self.interactions!r}")
