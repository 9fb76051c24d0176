"""The checkpoint the `clickprompt` ranker serves for a data folder, trained when missing.

`prepare_clickprompt` trains on that folder's ratings.csv / movies.csv only (a short PA-MLM, then a CTR-only
fine-tune from it) and keeps the result under `<work dir>/clickprompt/<hash of the two files>/`, reused while
they are unchanged. The evaluation harness hands over a copy with hidden ratings removed: its hash differs, so
nothing trained on the full data is ever reused there.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from ...config import ConfigError, Settings
from ...datafolder import data_key, file_hash, read_data_folder
from .model import CONFIG_FILE, WEIGHTS_FILE, ClickPromptConfig
from .train import TrainOptions, finetune, prepare_data, pretrain

__all__ = ["checkpoint_version", "default_checkpoint", "prepare_clickprompt", "prepare", "serving_checkpoint",
           "torch_threads", "CHECKPOINTS_DIR", "TRAINING_FILE", "EVAL_EVERY", "PATIENCE"]

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "clickprompt"  # under the work dir
# Validation every 40 steps, stop after 2 without a gain: on the full fixture every model peaks inside its
# first epoch, so epoch-end checks alone miss the best point. The CLI's, the bench's and prepare's defaults.
EVAL_EVERY = 40
PATIENCE = 2
TRAINING_FILE = "training.json"  # what prepare_clickprompt trained on, beside the checkpoint


@dataclass(frozen=True)
class _Recipe:
    """How `prepare_clickprompt` trains: PA-MLM for `pretrain_steps` (None: one whole epoch), validated on
    `pretrain_valid` samples (None: all; a one-epoch run only reports it, so a sample is enough), then a
    CTR-only fine-tune from it, validated on the whole validation split every `eval_every` steps (a CTR model
    on the full fixture peaks inside its first epoch) and stopped after `patience` checks without a gain."""

    name: str  # the checkpoint folder
    pretrain_steps: int | None
    pretrain_valid: int | None
    finetune_epochs: int = 3
    eval_every: int = EVAL_EVERY
    patience: int = PATIENCE


# quick: ~60 PA-MLM steps of 64 samples (~2 s each on one core) keep the whole run near 2-3 minutes.
_RECIPES = {True: _Recipe("ctr-after-pamlm-quick", 60, 512), False: _Recipe("ctr-after-pamlm", None, None)}


def checkpoint_version(checkpoint: Path | str) -> str:
    """The checkpoint folder's name and a short hash of its config and weights: a record names what made it."""
    checkpoint = Path(checkpoint)
    return f"{checkpoint.name}-{file_hash(checkpoint / CONFIG_FILE, checkpoint / WEIGHTS_FILE)[:10]}"


def default_checkpoint(settings: Settings, *, quick: bool = True) -> Path:
    """`<work dir>/clickprompt/<data_key(data folder)>/ctr-after-pamlm[-quick]`: one per data content."""
    return (settings.host.work_dir / CHECKPOINTS_DIR / data_key(settings.host.data_webroot)
            / _RECIPES[quick].name)


def _is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_clickprompt(settings: Settings, *, checkpoint: Path | str | None = None, quick: bool = True,
                        progress: bool = True, threads: int | None = 1) -> Path:
    """The serving checkpoint for the data folder, trained now if it does not exist yet (`default_checkpoint`,
    or `checkpoint`): PA-MLM on the folder's samples (a short run when `quick`), then a CTR-only fine-tune
    from it. Training happens in a temporary folder renamed into place, so an interrupted run leaves nothing
    that a later call would take for a checkpoint."""
    dest = Path(checkpoint) if checkpoint is not None else default_checkpoint(settings, quick=quick)
    if _is_checkpoint(dest):
        return dest
    recipe = _RECIPES[quick]
    started = time.perf_counter()
    ratings, movies = read_data_folder(settings.host.data_webroot)
    config = ClickPromptConfig(fusion="prefix_add", seed=settings.seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with torch_threads(threads):
            data = prepare_data(ratings, movies, config)
            pretrain_data = data
            if recipe.pretrain_valid is not None and recipe.pretrain_valid < len(data.valid):
                rows = np.random.default_rng(settings.seed).choice(len(data.valid), recipe.pretrain_valid, replace=False)
                pretrain_data = dataclasses.replace(data, valid=data.valid.subset(np.sort(rows)))
            # Small validation batches: PA-MLM's validation holds vocabulary-wide logits of every masked token
            # (~0.3 GB per 256 samples, twice with the softmax), which set this run's peak memory.
            pre = pretrain(config, pretrain_data, staging / "pretrain",
                           TrainOptions(epochs=1, max_steps_per_epoch=recipe.pretrain_steps, eval_batch_size=64,
                                        progress=progress))
            fit = finetune(config.replace(fusion="ctr"), data, staging / "model",
                           TrainOptions(epochs=recipe.finetune_epochs, eval_every=recipe.eval_every,
                                        patience=recipe.patience, progress=progress), init_from=pre.checkpoint)
        best = fit.best_entry
        (fit.checkpoint / TRAINING_FILE).write_text(json.dumps({
            "recipe": dataclasses.asdict(recipe), "data_folder": str(settings.host.data_webroot),
            "data_key": data_key(settings.host.data_webroot), "train_samples": len(data.train),
            "pretrain_seconds": pre.history[0]["train_seconds"], "valid_mlm_loss": pre.history[0]["valid_mlm_loss"],
            "valid_auc": best["valid_auc"], "best_step": best["step"], "wall_s": time.perf_counter() - started,
        }, indent=2))
        try:
            os.replace(fit.checkpoint, dest)
        except OSError:
            if not _is_checkpoint(dest):  # else another process finished the same training first: keep theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("clickprompt: trained %s in %.0f s (valid AUC %.4f)", dest, time.perf_counter() - started,
             best["valid_auc"])
    return dest


def prepare(settings: Settings, progress: bool = True, *, quick: bool = True) -> str:
    """`sparrow-llm clickprompt prepare`, and the model's preparation step (the registry's) in the demo and the evaluation:
    `prepare_clickprompt` for the data folder, saying whether it trained or reused the checkpoint."""
    started = time.perf_counter()
    existed = _is_checkpoint(default_checkpoint(settings, quick=quick))
    path = prepare_clickprompt(settings, quick=quick, progress=progress)
    if existed:
        line = f"clickprompt: reusing {path}"
    else:
        info = json.loads((path / TRAINING_FILE).read_text())
        line = (f"clickprompt: trained {path} on {info['train_samples']} samples in {time.perf_counter() - started:.0f} s "
                f"(valid AUC {info['valid_auc']:.4f})")
    return line


def serving_checkpoint(settings: Settings, checkpoint: Path | str | None = None) -> Path:
    """`checkpoint`, else the data folder's full checkpoint, else its quick one; a clear error when it does not
    exist. Finds the folder without loading the model."""
    if checkpoint is not None:
        path = Path(checkpoint)
    else:
        path = next((p for p in (default_checkpoint(settings, quick=False), default_checkpoint(settings))
                     if _is_checkpoint(p)), default_checkpoint(settings))
    if not _is_checkpoint(path):
        raise ConfigError(
            f"no ClickPrompt checkpoint at {path} (for the data folder {settings.host.data_webroot}); train one "
            "with `sparrow-llm clickprompt prepare` (~3 min), or `sparrow-llm clickprompt pretrain` then "
            "`sparrow-llm clickprompt finetune --mode ctr --init-from <pretrain dir>` and pass that checkpoint")
    return path
