"""The checkpoint the `clickprompt` ranker serves for a data folder, trained when missing.

`prepare_clickprompt` trains on that folder's ratings.csv / movies.csv only and keeps the result under
`<work dir>/clickprompt/<hash of the two files>/<recipe>/`, reused while they are unchanged. The evaluation
harness hands over a copy with hidden ratings removed: its hash differs, so nothing trained on the full data is
ever reused there. The model is trained to rank (`ranking`: every rating a click, sampled unrated movies as
non-clicks): a short PA-MLM over some of those samples, then a CTR-only fine-tune from it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ...config import ConfigError, Settings
from ...datafolder import data_key, file_hash, read_data_folder
from ...publish import staged_folder
from ...training import torch_threads
from ..pretrained import CONFIG_FILE, WEIGHTS_FILE, checkpoint_problem
from .configuration import ClickPromptConfig
from .model import FEATURES_FILE
from .ranking import NegativeSampling, prepare_ranking_data, with_text
from .train import FitResult, TrainOptions, finetune, pretrain

__all__ = ["checkpoint_version", "default_checkpoint", "prepare_clickprompt", "serving_checkpoint", "serving_problem",
           "train_recipe", "Recipe", "RECIPES", "CHECKPOINTS_DIR", "TRAINING_FILE"]

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "clickprompt"  # under the work dir
TRAINING_FILE = "training.json"  # what prepare_clickprompt trained on, beside the checkpoint
_WORK = "training"  # the training's folder inside the one published (PA-MLM's checkpoint, the model's)


@dataclass(frozen=True)
class Recipe:
    """How `prepare_clickprompt` trains: ranking samples with `negatives` draws per rating at popularity exponent
    `alpha` (`ranking.NegativeSampling`) for a CTR model with the `backbone`; PA-MLM for `pretrain_steps` (None:
    one whole epoch; 0: none, the CTR model starts from scratch), validated on `pretrain_valid` samples (None:
    all); then a CTR-only fine-tune validated (`ranking.RankingValidation`: NDCG@10 of each user's held-out last
    liked movie) every `eval_every` steps, stopped after `patience` checks without a gain.

    The defaults were chosen on validation users (bench/bench_clickprompt_ranking.py, the README's numbers):
    DeepFM over DCNv2 (its FM term pairs the candidate with the user's recent movies directly), alpha 0.5 over 0
    (as accurate, more coverage) and 1, 4 negatives over 8 and 16; checks every 200 steps with patience 3, as
    NDCG@10 over ~460 users is noisy from one check to the next and peaks within 1-2 epochs."""

    name: str  # the checkpoint folder
    pretrain_steps: int | None
    pretrain_valid: int | None
    finetune_epochs: int = 5
    eval_every: int = 200
    patience: int = 3
    negatives: int = 4
    alpha: float = 0.5
    backbone: str = "deepfm"


# quick: ~60 PA-MLM steps of 64 samples (~2 s each on one core) keep the whole run near 3-4 minutes; full:
# 400 steps (~15 minutes), a whole epoch of ~100k ranking samples being ~50 minutes.
RECIPES = {True: Recipe("rank-after-pamlm-quick", 60, 512), False: Recipe("rank-after-pamlm", 400, None)}


def checkpoint_version(checkpoint: Path | str) -> str:
    """The checkpoint folder's name and a short hash of its config and weights: a record names what made it."""
    checkpoint = Path(checkpoint)
    return f"{checkpoint.name}-{file_hash(checkpoint / CONFIG_FILE, checkpoint / WEIGHTS_FILE)[:10]}"


def default_checkpoint(settings: Settings, *, quick: bool = True) -> Path:
    """`<work dir>/clickprompt/<data_key(data folder)>/ctr-after-pamlm[-quick]`: one per data content."""
    return (settings.host.work_dir / CHECKPOINTS_DIR / data_key(settings.host.data_webroot)
            / RECIPES[quick].name)


def serving_problem(path: Path, settings: Settings) -> str | None:
    """Why `path` cannot serve the data folder (`pretrained.checkpoint_problem`: files complete and readable,
    trained on this data), None when it can."""
    return checkpoint_problem(path, (CONFIG_FILE, WEIGHTS_FILE, FEATURES_FILE, TRAINING_FILE),
                              data_key=data_key(settings.host.data_webroot), record=TRAINING_FILE)


def train_recipe(ratings: pd.DataFrame, movies: pd.DataFrame, recipe: Recipe, out_dir: Path, *, seed: int,
                 progress: bool = True) -> tuple[FitResult, dict[str, Any]]:
    """Train `recipe` on `ratings` into `out_dir/model` (PA-MLM, when it has one, into `out_dir/pretrain`): the
    fine-tune's result and what the training file records."""
    config = ClickPromptConfig(fusion="prefix_add", backbone=recipe.backbone, seed=seed)
    ranking = prepare_ranking_data(ratings, movies, NegativeSampling(recipe.negatives, recipe.alpha, seed), config)
    data = ranking.data
    info: dict[str, Any] = {"train_samples": len(data.train), "valid_users": len(ranking.validation.targets)}
    init_from = None
    if recipe.pretrain_steps != 0:
        batch = TrainOptions.batch_size
        rows = None if recipe.pretrain_steps is None else recipe.pretrain_steps * batch
        # Small validation batches: PA-MLM's validation holds vocabulary-wide logits of every masked token
        # (~0.3 GB per 256 samples, twice with the softmax), which set this run's peak memory.
        pre = pretrain(config, with_text(data, config, rows, recipe.pretrain_valid, seed), out_dir / "pretrain",
                       TrainOptions(epochs=1, max_steps_per_epoch=recipe.pretrain_steps, eval_batch_size=64,
                                    progress=progress))
        init_from = pre.checkpoint
        info.update(pretrain_seconds=pre.history[0]["train_seconds"], valid_mlm_loss=pre.history[0]["valid_mlm_loss"])
    fit = finetune(config.replace(fusion="ctr"), data, out_dir / "model",
                   TrainOptions(epochs=recipe.finetune_epochs, eval_every=recipe.eval_every, patience=recipe.patience,
                                progress=progress), init_from=init_from, validate=ranking.validate)
    best = fit.best_entry
    info.update(valid_ndcg=best["valid_ndcg"], valid_auc=best["valid_auc"], best_step=best["step"])
    return fit, info


def prepare_clickprompt(settings: Settings, *, checkpoint: Path | str | None = None, quick: bool = True,
                        progress: bool = True, threads: int | None = 1) -> Path:
    """The serving checkpoint for the data folder, trained now if it does not exist yet (`default_checkpoint`,
    or `checkpoint`) by `RECIPES[quick]`. Training happens in a temporary folder renamed into place, so an
    interrupted run leaves nothing that a later call would take for a checkpoint."""
    dest = Path(checkpoint) if checkpoint is not None else default_checkpoint(settings, quick=quick)
    problem = serving_problem(dest, settings)
    if problem is None:
        return dest
    if dest.exists():  # damaged, incomplete or another data's: trained again, never "reused"
        log.warning("clickprompt: retraining: %s", problem)
    recipe = RECIPES[quick]
    started = time.perf_counter()
    ratings, movies = read_data_folder(settings.host.data_webroot)
    # Published whole (`publish.staged_folder`); a process that finished the same training first keeps its model.
    with staged_folder(dest, keep_existing=lambda path: serving_problem(path, settings) is None) as staging:
        with torch_threads(threads):
            fit, info = train_recipe(ratings, movies, recipe, staging / _WORK, seed=settings.seed, progress=progress)
        (fit.checkpoint / TRAINING_FILE).write_text(json.dumps({
            "recipe": dataclasses.asdict(recipe), "data_folder": str(settings.host.data_webroot),
            "data_key": data_key(settings.host.data_webroot), "seed": settings.seed, **info,
            "wall_s": time.perf_counter() - started,
        }, indent=2))
        for entry in fit.checkpoint.iterdir():  # the checkpoint is what is published, without PA-MLM's
            entry.rename(staging / entry.name)
        shutil.rmtree(staging / _WORK)
    log.info("clickprompt: trained %s in %.0f s (valid NDCG@10 %.4f)", dest, time.perf_counter() - started,
             info["valid_ndcg"])
    return dest


def serving_checkpoint(settings: Settings, checkpoint: Path | str | None = None) -> Path:
    """`checkpoint`, else the data folder's full checkpoint, else its quick one; a clear error when it does not
    exist or cannot be used (a damaged file, another data's). Finds the folder without loading the model."""
    if checkpoint is not None:
        path = Path(checkpoint)
        problem = checkpoint_problem(path, (CONFIG_FILE, WEIGHTS_FILE, FEATURES_FILE))
    else:
        path = next((p for p in (default_checkpoint(settings, quick=False), default_checkpoint(settings))
                     if p.exists()), default_checkpoint(settings))
        problem = serving_problem(path, settings)
    if not path.exists():
        raise ConfigError(
            f"no ClickPrompt checkpoint at {path} (for the data folder {settings.host.data_webroot}); train one "
            "with `sparrow-llm clickprompt prepare` (~3 min), or `sparrow-llm clickprompt pretrain` then "
            "`sparrow-llm clickprompt finetune --mode ctr --init-from <pretrain dir>` and pass that checkpoint")
    if problem is not None:
        raise ConfigError(f"the ClickPrompt checkpoint {path} cannot be used: {problem}; train it again with "
                          "`sparrow-llm clickprompt prepare`")
    return path
