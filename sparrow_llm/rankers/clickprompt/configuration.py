"""ClickPrompt's configuration, torch-free: the CLI shows its defaults and choices without loading torch.

`ClickPromptConfig` is checked on construction; `model` builds the network it describes (its `BACKBONES`
and `POOLINGS` hold the modules named here).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import ConfigError
from ..pretrained import ModelConfig

__all__ = ["ClickPromptConfig", "Fusion", "FUSIONS", "BACKBONE_NAMES", "POOLING_NAMES", "EVAL_EVERY", "PATIENCE"]

BACKBONE_NAMES = ("dcnv2", "deepfm")  # model.BACKBONES
POOLING_NAMES = ("mean", "cls")  # model.POOLINGS

# The rating task's validation (the AUC table): every 40 steps, stop after 2 without a gain: on the full fixture
# every model peaks inside its first epoch, so epoch-end checks alone miss the best point. The CLI's and the
# bench's defaults (the serving recipe's ranking task has its own, `checkpoint.Recipe`).
EVAL_EVERY = 40
PATIENCE = 2


@dataclass(frozen=True)
class Fusion:
    """What a fusion mode computes; the logit is the sum of the parts it turns on."""

    uses_ctr: bool  # builds the CTR model
    uses_plm: bool  # builds the PLM and a linear head on its pooled output
    uses_prompts: bool  # the CTR model's hidden vector becomes the PLM's prefix (and the PA-MLM head exists)
    adds_ctr_logit: bool  # the CTR model's own logit is part of the prediction


FUSIONS: dict[str, Fusion] = {
    "ctr": Fusion(uses_ctr=True, uses_plm=False, uses_prompts=False, adds_ctr_logit=True),
    "plm": Fusion(uses_ctr=False, uses_plm=True, uses_prompts=False, adds_ctr_logit=False),
    "prefix": Fusion(uses_ctr=True, uses_plm=True, uses_prompts=True, adds_ctr_logit=False),
    "prefix_add": Fusion(uses_ctr=True, uses_plm=True, uses_prompts=True, adds_ctr_logit=True),
}


@dataclass(frozen=True)
class ClickPromptConfig(ModelConfig):
    backbone: str = "dcnv2"  # one of BACKBONE_NAMES
    embed_dim: int = 16
    mlp_dims: tuple[int, ...] = (256, 128)
    cross_layers: int = 3  # DCNv2 only
    num_prompt: int = 5  # prefix vectors per PLM layer
    prompt_hidden: int = 256
    fusion: str = "prefix"  # a key of FUSIONS
    plm_path: str | None = None  # None: the packaged all-MiniLM-L6-v2
    max_text_len: int = 64
    pooling: str = "mean"  # one of POOLING_NAMES
    freeze_plm: bool = True  # frozen PLM weights are not saved: they reload from plm_path
    dropout: float = 0.1
    seed: int = 2024

    def __post_init__(self) -> None:
        object.__setattr__(self, "mlp_dims", tuple(int(d) for d in self.mlp_dims))
        for name, known in (("backbone", BACKBONE_NAMES), ("fusion", tuple(FUSIONS)), ("pooling", POOLING_NAMES)):
            if getattr(self, name) not in known:
                raise ConfigError(f"{name} must be one of {sorted(known)}, got {getattr(self, name)!r}")
        for name in ("embed_dim", "num_prompt", "prompt_hidden", "max_text_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cross_layers < 0 or not 0.0 <= self.dropout < 1.0 or any(d < 1 for d in self.mlp_dims):
            raise ConfigError("cross_layers must be >= 0, dropout in [0, 1), mlp_dims positive")

    @property
    def fusion_mode(self) -> Fusion:
        return FUSIONS[self.fusion]
