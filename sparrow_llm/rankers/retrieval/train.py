"""Training SASRec on CPU: next-item windows of the training sequences, validation early stopping.

Every user's training sequence is cut into windows of `max_len + 1` items from its end (a long history
gives several windows, so no interaction is lost to the length limit); the model predicts each next item
in a window. Every `eval_every` epochs the validation NDCG@10 (`interactions.ndcg_at`, the held-out movie
after each validation user's training sequence) is measured; training stops after `patience` checks
without a gain, and the best weights are kept.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ...progress import progress_bar
from ...training import EarlyStopping, torch_threads, training_device
from .interactions import History, ValidationSet, ndcg_at
from .configuration import SASRecConfig
from .sasrec import SASRec, encode

__all__ = ["TrainOptions", "TrainResult", "windows", "train_sasrec"]


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 60
    batch_size: int = 128
    lr: float = 3e-3
    eval_every: int = 2
    patience: int = 5
    threads: int | None = 1  # torch threads; None: torch's default
    progress: bool = True


@dataclass
class TrainResult:
    model: SASRec
    best_epoch: int
    valid_ndcg10: float
    history: list[dict]
    train_s: float


def windows(sequences: Sequence[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) token ids, left-padded to `max_len`: windows of max_len + 1 items cut from each
    sequence's end, overlapping by one item so every transition is a target exactly once."""
    chunks = []
    for items in sequences:
        end = len(items)
        while end > 1:
            start = max(0, end - max_len - 1)
            chunks.append(np.asarray(items[start:end]))
            end = start + 1
    return encode([c[:-1] for c in chunks], max_len), encode([c[1:] for c in chunks], max_len)


def train_sasrec(config: SASRecConfig, train: Sequence[History], valid: ValidationSet,
                 options: TrainOptions = TrainOptions()) -> TrainResult:
    """Train on every user's training part (`config.interactions` of it), stopping early on validation."""
    started = time.perf_counter()
    with torch_threads(options.threads):  # the host and other jobs share this machine's cores
        inputs, targets = windows([h.select(config.interactions) for h in train], config.max_len)
        if not len(inputs):
            raise ValueError("no training sequence has two interactions: nothing to learn from")
        device = training_device()
        model = SASRec(config).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
        generator = torch.Generator().manual_seed(config.seed)
        valid_inputs = [h.select(config.interactions) for h in valid.histories]
        rated = [h.items for h in valid.histories]
        history: list[dict] = []
        stopping = EarlyStopping(options.patience)
        with progress_bar(total=options.epochs, desc="sasrec", unit="epoch", enabled=options.progress) as bar:
            for epoch in range(1, options.epochs + 1):
                model.train()
                losses = []
                for batch in torch.randperm(len(inputs), generator=generator).split(options.batch_size):
                    loss = SASRec.loss(model(inputs[batch].to(device)), targets[batch].to(device))
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.item())
                bar.update(1)
                if epoch % options.eval_every and epoch != options.epochs:
                    continue
                score = ndcg_at(model.predict(valid_inputs), rated, valid.targets)
                history.append({"epoch": epoch, "loss": float(np.mean(losses)), "valid_ndcg10": score})
                bar.set_postfix(loss=f"{np.mean(losses):.3f}", valid=f"{score:.4f}")
                # Without validation users (a tiny data folder) the last epoch's weights are kept.
                if stopping.update(score, epoch, lambda: copy.deepcopy(model.state_dict()), always=not len(valid)):
                    break
        model.load_state_dict(stopping.state)
        model.cpu().eval()  # served on the CPU, as every retrieval model
    return TrainResult(model, stopping.best_step, stopping.best, history, time.perf_counter() - started)
