"""SASRec (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation") in PyTorch.

A causal transformer over the user's last `max_len` interactions; the output at each position scores every
catalogue item by a dot product with the (shared) item embeddings. Trained with the full softmax cross-
entropy over the catalogue instead of the paper's one sampled negative with binary cross-entropy: on a
catalogue of thousands the full softmax is cheap, and it is what lifts SASRec above BERT4Rec (Klenitskiy &
Vasilev 2023, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?"). Pre-norm blocks
and GELU, as transformers use now. Item index 0 is padding; catalogue index i is token i + 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..pretrained import WEIGHTS_FILE, PretrainedModel
from .configuration import SASRecConfig

__all__ = ["SASRec", "PAD", "encode"]

PAD = 0


def encode(sequences: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """Left-padded token ids of each sequence's last `max_len` items (catalogue indexes, oldest first)."""
    out = torch.full((len(sequences), max_len), PAD, dtype=torch.long)
    for row, items in enumerate(sequences):
        tail = np.asarray(items[-max_len:], dtype=np.int64) + 1
        if len(tail):
            out[row, max_len - len(tail):] = torch.from_numpy(tail)
    return out


class SASRec(PretrainedModel, nn.Module):
    """`forward(tokens) -> logits`, `loss`, `predict`; `save_pretrained` / `from_pretrained` (safetensors)."""

    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        torch.manual_seed(config.seed)
        self.items = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=PAD)
        self.positions = nn.Embedding(config.max_len, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(config.hidden, config.heads, config.hidden, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        # Small embeddings: with nn.Embedding's N(0, 1) the first logits are huge and training stalls.
        for emb in (self.items, self.positions):
            nn.init.normal_(emb.weight, std=config.init_std)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits over the catalogue (batch x positions x n_items) of the item after each position."""
        length = tokens.shape[1]
        pad = tokens == PAD
        h = self.items(tokens) + self.positions.weight[:length]
        h = self.dropout(h) * ~pad.unsqueeze(-1)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device, dtype=torch.bool)
        h = self.encoder(h, mask=causal, src_key_padding_mask=pad, is_causal=True)
        return self.norm(h) @ self.items.weight[1:].T

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the positions with a target (`targets` are token ids, PAD: none)."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1) - 1, ignore_index=PAD - 1)

    @torch.no_grad()
    def predict(self, sequences: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Scores of every catalogue item after each sequence (users x n_items)."""
        was_training = self.training
        self.eval()
        try:
            device = self.items.weight.device  # a model still on its training device validates there
            parts = []
            for start in range(0, len(sequences), batch_size):
                tokens = encode(sequences[start:start + batch_size], self.config.max_len).to(device)
                parts.append(self(tokens)[:, -1].cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(parts) if parts else np.zeros((0, self.config.n_items), dtype=np.float32)

    def _save_weights(self, directory: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_FILE))

    @classmethod
    def _from_weights(cls, config: SASRecConfig, directory: Path) -> "SASRec":
        model = cls(config)
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        model.eval()
        return model
