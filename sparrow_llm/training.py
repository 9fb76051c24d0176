"""What every training loop shares: the device, torch's thread count for a block, and early stopping on
validation.

torch is imported inside the functions only, so importing this module costs nothing to torch-free callers.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

__all__ = ["training_device", "torch_threads", "EarlyStopping"]


def training_device():
    """The device a training loop runs on: CUDA when torch sees one, else the CPU. The same command trains on
    either; nothing else changes."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside the block (None or 0: left alone) and restored after
    it. Only the intra-op count is touched: torch's inter-op count cannot be changed again once used."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class EarlyStopping:
    """Early stopping counted in validations, as RecBole's `early_stopping(value, best, cur_step, max_step,
    bigger)`: each `update` records one validation; a value better than every earlier one (the first always)
    keeps the training state and its step, any other counts one more validation without a gain, and training
    stops after `patience` of them in a row."""

    patience: int
    bigger: bool = True  # a higher validation value is better
    best: float | None = None
    best_step: Any = None  # the caller's step, epoch or index of the best validation
    state: Any = None  # `state()` of the best validation
    stale: int = 0  # validations since the best one

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")

    def update(self, value: float, step: Any, state: Callable[[], Any], *, always: bool = False) -> bool:
        """Record a validation (`always`: take it as the best, e.g. when nothing can be validated); `state` is
        called only when it is the best. Returns whether training should stop."""
        if always or self.best is None or (value > self.best if self.bigger else value < self.best):
            self.best, self.best_step, self.state, self.stale = value, step, state(), 0
        else:
            self.stale += 1
        return self.stop

    @property
    def stop(self) -> bool:
        return self.stale >= self.patience
