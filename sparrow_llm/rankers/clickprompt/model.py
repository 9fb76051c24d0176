"""The ClickPrompt network: a CTR backbone, a prompt generator, a PLM read with prefix prompts, fusion heads
and the prompt-aware masked language modelling (PA-MLM) head.

Prefix prompts in BERT (transformers 5.x): the encoder takes extra keys/values only through a
`DynamicCache` filled layer by layer with `cache.update(key, value, layer_idx)`. Checked in 5.24's
`modeling_bert.py` and by the tests:
  * `BertModel.forward` sets `use_cache=False` for a non-decoder, but still hands the given cache to
    every layer, and `BertSelfAttention` concatenates the cached keys/values in front of its own, so
    the prefixes are attended without `is_decoder` (which would make attention causal: wrong here).
  * The forward keyword is `cache` since 5.x; `past_key_values` is its deprecated alias (warns, and
    goes in 5.40). `_CACHE_KWARG` picks whichever the installed version has.
  * The 2D attention mask must cover prefix + text (num_prompt ones on the left): without a cache
    in the mask builder, an encoder takes the key length from the mask ("prefix tuning" path).
  * The embeddings shift position ids by the cache length; we pass `position_ids` 0..L-1 so the
    text keeps the positions MiniLM was trained with (with the prefix masked out, the output then
    equals the plain forward bit for bit).
  * `update` appends, so every forward gets a fresh cache.
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DataCollatorForLanguageModeling, DynamicCache

from ...minilm import load_pretrained, mean_pool, model_path
from ..pretrained import WEIGHTS_FILE, PretrainedModel
from .configuration import ClickPromptConfig
from .features import EncodedSamples, FeatureSpace, encode_samples

__all__ = [
    "ClickPrompt", "BACKBONES", "POOLINGS", "FieldEmbedding", "DCNv2", "DeepFM", "PromptGenerator", "MLMHead",
    "load_plm", "load_tokenizer", "plm_path", "Batch", "FEATURES_FILE",
]

Batch = Mapping[str, torch.Tensor]

FEATURES_FILE = "features.json"
_IGNORE = -100  # label of tokens the MLM loss skips (cross_entropy's ignore_index)


# all-MiniLM-L6-v2 was trained with mean pooling; [CLS] is the BERT habit (configuration.POOLING_NAMES).
POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": mean_pool,
    "cls": lambda states, mask: states[:, 0],
}


def plm_path(config: ClickPromptConfig) -> str:
    return config.plm_path or str(model_path())


def load_plm(path: str) -> nn.Module:
    # Loaded once per process; every model gets its own copy (one may fine-tune it). The pooler is
    # loaded with the rest (dropping it at load time makes transformers print a report) and removed later.
    return copy.deepcopy(load_pretrained(path)[0])


def load_tokenizer(path: str) -> Any:
    return load_pretrained(path)[1]


@functools.lru_cache(maxsize=None)
def _cache_kwarg(plm_class: type) -> str:
    return "cache" if "cache" in inspect.signature(plm_class.forward).parameters else "past_key_values"


def _mlp(in_dim: int, dims: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for out_dim in dims:
        layers += [nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = out_dim
    return nn.Sequential(*layers), in_dim


class FieldEmbedding(nn.Module):
    """All tables in one embedding matrix; each field reads its table at its offset (fields naming the
    same table, e.g. movieId and userRatedMovie1..5, share rows)."""

    def __init__(self, tables: Mapping[str, int], field_tables: Sequence[str], dim: int):
        super().__init__()
        offsets, total = {}, 0
        for name in sorted(tables):
            offsets[name], total = total, total + tables[name]
        self.num_rows = total
        self.register_buffer("offsets", torch.tensor([offsets[t] for t in field_tables]), persistent=False)
        self.table = nn.Embedding(total, dim)
        nn.init.normal_(self.table.weight, std=0.01)  # small: CTR embeddings start near "no signal"

    def rows(self, cat: torch.Tensor) -> torch.Tensor:
        """[B, fields] table indices -> [B, fields] rows of the shared matrix."""
        return cat + self.offsets

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.table(rows)


class DCNv2(nn.Module):
    """DCN-V2 (Wang et al., 2021), parallel form: a full-rank cross network and a deep MLP over the
    flattened field embeddings. Hidden = [cross output, MLP output]."""

    def __init__(self, num_fields: int, num_rows: int, config: ClickPromptConfig):
        super().__init__()
        width = num_fields * config.embed_dim
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(config.cross_layers))
        self.deep, deep_dim = _mlp(width, config.mlp_dims, config.dropout)
        self.hidden_dim = width + deep_dim
        self.out = nn.Linear(self.hidden_dim, 1)

    def forward(self, rows: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = emb.flatten(1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        hidden = torch.cat([x, self.deep(x0)], dim=-1)
        return self.out(hidden).squeeze(-1), hidden


class DeepFM(nn.Module):
    """DeepFM (Guo et al., 2017): first-order weights + FM pairwise interactions + a deep MLP.
    Hidden = [FM interaction vector, MLP output]."""

    def __init__(self, num_fields: int, num_rows: int, config: ClickPromptConfig):
        super().__init__()
        self.first_order = nn.Embedding(num_rows, 1)
        nn.init.zeros_(self.first_order.weight)
        self.bias = nn.Parameter(torch.zeros(1))
        self.deep, deep_dim = _mlp(num_fields * config.embed_dim, config.mlp_dims, config.dropout)
        self.deep_out = nn.Linear(deep_dim, 1)
        self.hidden_dim = config.embed_dim + deep_dim

    def forward(self, rows: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.first_order(rows).sum(dim=(1, 2)) + self.bias
        total = emb.sum(1)
        fm = 0.5 * (total * total - (emb * emb).sum(1))  # sum over field pairs of <e_i, e_j>, per dimension
        deep = self.deep(emb.flatten(1))
        return first + fm.sum(-1) + self.deep_out(deep).squeeze(-1), torch.cat([fm, deep], dim=-1)


# configuration.BACKBONE_NAMES
BACKBONES: dict[str, Callable[[int, int, ClickPromptConfig], nn.Module]] = {"dcnv2": DCNv2, "deepfm": DeepFM}


class PromptGenerator(nn.Module):
    """The CTR model's last hidden vector -> `num_prompt` prefix keys and values for each PLM layer
    (an MLP, as in P-tuning v2's reparameterised prefixes)."""

    def __init__(self, in_dim: int, num_layers: int, num_heads: int, head_dim: int, num_prompt: int,
                 hidden: int, dropout: float):
        super().__init__()
        self.shape = (num_layers, 2, num_prompt, num_heads, head_dim)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, math.prod(self.shape)))

    def forward(self, hidden: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One (key, value) per layer, each [batch, heads, num_prompt, head_dim]."""
        out = self.net(hidden).view(hidden.shape[0], *self.shape).permute(1, 2, 0, 4, 3, 5)
        return [(layer[0], layer[1]) for layer in out]


class MLMHead(nn.Module):
    """BERT's MLM prediction head: dense + GELU + LayerNorm, then a decoder tied to the PLM's word
    embeddings (passed in, so no second copy of the matrix is stored) plus its own bias."""

    def __init__(self, hidden_size: int, vocab_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(states))), word_embeddings, self.bias)


class ClickPrompt(PretrainedModel, nn.Module):
    """`forward(batch) -> logits`, `loss(batch)`, `predict(batch) -> probabilities`, `mlm_loss(batch)`;
    `save_pretrained` / `from_pretrained` (`model.safetensors` + `config.json` + `features.json`).

    A batch is `EncodedSamples.batch(...)`: `cat` [B, fields], `label` [B], and for PLM modes
    `input_ids`, `attention_mask`, `token_type_ids` [B, L].
    """

    config_class = ClickPromptConfig

    def __init__(self, config: ClickPromptConfig, space: FeatureSpace):
        super().__init__()
        self.config = config
        self.space = space
        self.fusion = config.fusion_mode
        # Same seed, same initial weights, without touching the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self._build()

    def _build(self) -> None:
        config, fusion = self.config, self.fusion
        if fusion.uses_ctr:
            self.embedding = FieldEmbedding(self.space.tables(), self.space.field_tables(), config.embed_dim)
            self.ctr = BACKBONES[config.backbone](len(self.space.field_tables()), self.embedding.num_rows, config)
        if fusion.uses_plm:
            path = plm_path(config)
            self.plm = load_plm(path)
            self.plm.pooler = None  # ClickPrompt pools itself; BertModel skips a None pooler
            self.tokenizer = load_tokenizer(path)
            self.plm.requires_grad_(not config.freeze_plm)
            plm_config = self.plm.config
            self.text_head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(plm_config.hidden_size, 1))
        if fusion.uses_prompts:
            heads = plm_config.num_attention_heads
            self.prompt = PromptGenerator(self.ctr.hidden_dim, plm_config.num_hidden_layers, heads,
                                          plm_config.hidden_size // heads, config.num_prompt,
                                          config.prompt_hidden, config.dropout)
            self.mlm_head = MLMHead(plm_config.hidden_size, plm_config.vocab_size, plm_config.layer_norm_eps)

    def train(self, mode: bool = True) -> "ClickPrompt":
        super().train(mode)
        if self.fusion.uses_plm and self.config.freeze_plm:
            self.plm.eval()  # a frozen PLM is a fixed function: no dropout noise
        return self

    def encode(self, samples: pd.DataFrame, catalog: pd.DataFrame) -> EncodedSamples:
        """Samples as this model's inputs: its feature space, and its tokenizer when it reads text."""
        tokenizer = self.tokenizer if self.fusion.uses_plm else None
        return encode_samples(samples, self.space, catalog, tokenizer, self.config.max_text_len)

    def ctr_forward(self, cat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CTR model alone: (logit [B], last hidden vector [B, hidden])."""
        rows = self.embedding.rows(cat)
        return self.ctr(rows, self.embedding(rows))

    def encode_text(self, batch: Batch, prompts: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
                    ) -> torch.Tensor:
        """The PLM's last hidden states [B, L, H] of the text, attending to `prompts` when given."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        extra: dict[str, Any] = {}
        if prompts is not None:
            cache = DynamicCache()
            for layer, (key, value) in enumerate(prompts):
                cache.update(key, value, layer)
            mask = torch.cat([mask.new_ones(mask.shape[0], prompts[0][0].shape[2]), mask], dim=1)
            extra[_cache_kwarg(type(self.plm))] = cache
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        return self.plm(input_ids=ids, attention_mask=mask, token_type_ids=batch.get("token_type_ids"),
                        position_ids=positions, **extra).last_hidden_state

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = torch.zeros(batch["cat"].shape[0], device=batch["cat"].device)
        hidden = None
        if self.fusion.uses_ctr:
            ctr_logit, hidden = self.ctr_forward(batch["cat"])
            if self.fusion.adds_ctr_logit:
                logit = logit + ctr_logit
        if self.fusion.uses_plm:
            prompts = self.prompt(hidden) if self.fusion.uses_prompts else None
            pooled = POOLINGS[self.config.pooling](self.encode_text(batch, prompts), batch["attention_mask"])
            logit = logit + self.text_head(pooled).squeeze(-1)
        return logit

    def loss(self, batch: Batch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch["label"])

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """Click probabilities [B]; call `eval()` first for deterministic scores."""
        return torch.sigmoid(self(batch))

    def mlm_loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """PA-MLM: mask 15% of the text's tokens (80% [MASK], 10% random, 10% kept) and predict them
        from the PLM reading the masked text with the CTR model's prompts as prefix."""
        if not self.fusion.uses_prompts:
            raise ValueError(f"PA-MLM needs prompts; fusion {self.config.fusion!r} has none (use prefix or prefix_add)")
        _, hidden = self.ctr_forward(batch["cat"])
        ids, labels = self._mask_tokens(batch["input_ids"], batch["attention_mask"], generator)
        states = self.encode_text({**batch, "input_ids": ids}, self.prompt(hidden))
        picked = labels != _IGNORE
        if not picked.any():  # texts with no maskable token: nothing to learn, but keep the graph
            return states.sum() * 0.0
        logits = self.mlm_head(states[picked], self.plm.get_input_embeddings().weight)
        return F.cross_entropy(logits, labels[picked])

    def _mask_tokens(self, ids: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's masking (15% of the text's tokens; 80% [MASK], 10% random, 10% kept) by transformers' collator;
        padding and special tokens are never picked."""
        collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=0.15)
        collator.generator = generator  # None: torch's global generator, seeded by set_seed
        special = torch.tensor(sorted(self.tokenizer.all_special_ids), device=ids.device)
        return collator.torch_mask_tokens(ids.clone(), special_tokens_mask=~mask.bool() | torch.isin(ids, special))

    def parameter_count(self, trainable_only: bool = False) -> int:
        """Parameters used to predict (the PA-MLM head is a pretraining tool, left out)."""
        return sum(p.numel() for name, p in self.named_parameters()
                   if not name.startswith("mlm_head.") and (p.requires_grad or not trainable_only))

    def is_saved(self, name: str) -> bool:
        # A frozen PLM is the published checkpoint: reloaded from plm_path, not copied into ours.
        return not (self.config.freeze_plm and name.startswith("plm."))

    def _save_weights(self, directory: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items() if self.is_saved(k)}
        save_file(state, str(directory / WEIGHTS_FILE))
        self.space.save(directory / FEATURES_FILE)

    @classmethod
    def _from_weights(cls, config: ClickPromptConfig, directory: Path) -> "ClickPrompt":
        model = cls(config, FeatureSpace.load(directory / FEATURES_FILE))
        model.load_weights(directory, strict=True)
        return model

    def load_weights(self, directory: Path | str, strict: bool = False) -> list[str]:
        """Copy every saved tensor this model also has (names and shapes must agree); returns their names.
        `strict`: every tensor this model saves must be in the file."""
        saved = load_file(str(Path(directory) / WEIGHTS_FILE))
        own = self.state_dict()
        names = sorted(k for k in saved if k in own)
        wrong = [f"{k} {tuple(saved[k].shape)} != {tuple(own[k].shape)}" for k in names if saved[k].shape != own[k].shape]
        if wrong:
            raise ValueError(f"checkpoint {directory} does not fit this model: {'; '.join(wrong[:5])}")
        missing = [k for k in own if self.is_saved(k) and k not in saved]
        if strict and missing:
            raise ValueError(f"checkpoint {directory} lacks {len(missing)} tensors, e.g. {missing[:5]}")
        self.load_state_dict({k: saved[k] for k in names}, strict=False)
        return names
