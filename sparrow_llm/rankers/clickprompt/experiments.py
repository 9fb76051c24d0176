"""The paths of `sparrow-llm clickprompt pretrain|finetune|eval`: training runs and the comparison table.

Samples for training come from the `sparrow-llm features` job's output folder when given (`samples`),
from a host sample file split by time (`host_samples`, `run_eval` only), else they are built in pandas
from the data folder. Torch runs on `threads` (1 by default: on a 2-core machine a second thread costs
more than it gives on these tensor sizes) and the caller's setting is restored afterwards. Each returns
its summary line.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from ...config import Settings
from ...schema import MOVIES_CSV
from ...datafolder import read_data_folder
from ...training import torch_threads
from .configuration import EVAL_EVERY, FUSIONS, PATIENCE, ClickPromptConfig
from .samples import build_samples, movie_stats_now, read_host_samples, read_sample_splits, time_split
from .train import (
    HISTORY_FILE, PRETRAIN_DIR, TABLE_ROWS, FitResult, PreparedData, TrainOptions, evaluate, evaluate_table, finetune,
    prepare_split, pretrain, train_table,
)

__all__ = ["load_training_data", "run_pretrain", "run_finetune", "table_options", "evaluate_seeds", "summarize",
           "table_markdown", "run_eval"]


def load_training_data(settings: Settings, config: ClickPromptConfig, *, samples: Path | str | None = None,
                       host_samples: Path | str | None = None, train_frac: float | None = None) -> PreparedData:
    """Samples split by time and encoded: `samples` (the features job's folder), else `host_samples` (one host
    sample file, split by time), else built from the data folder. Movies, and the movie statistics the
    checkpoint serves with, always come from the data folder.

    `train_frac` keeps a seeded random fraction of the training split (in time order), so a CPU can train
    text models on the same, smaller data as the others; validation and test stay whole."""
    if samples is not None and host_samples is not None:
        raise ValueError("give either samples (a features folder) or host_samples (a sample file), not both")
    if train_frac is not None and not 0.0 < train_frac <= 1.0:
        raise ValueError(f"train_frac must be in (0, 1], got {train_frac}")
    ratings, movies = read_data_folder(settings.host.data_webroot)
    if samples is not None:
        split = read_sample_splits(samples)
    elif host_samples is not None:
        split = time_split(read_host_samples(host_samples))
    else:
        split = time_split(build_samples(ratings, movies))
    if train_frac is not None and train_frac < 1.0:
        train = split.train.sample(frac=train_frac, random_state=settings.seed).sort_index()
        split = split._replace(train=train.reset_index(drop=True))
    return prepare_split(split, movies, movie_stats_now(ratings), config)


def run_pretrain(settings: Settings, out: Path | str, *, samples: Path | str | None = None, epochs: int = 1,
                 seed: int | None = None, threads: int | None = 1, max_steps: int | None = None,
                 progress: bool = True) -> str:
    """PA-MLM pretraining (`sparrow-llm clickprompt pretrain`) into `out`; `max_steps` caps each epoch."""
    config = ClickPromptConfig(fusion="prefix_add", seed=settings.seed if seed is None else seed)
    with torch_threads(threads):
        data = load_training_data(settings, config, samples=samples)
        fit = pretrain(config, data, out, TrainOptions(epochs=epochs, max_steps_per_epoch=max_steps, eval_batch_size=64,
                                                       progress=progress))
    best = fit.best_entry
    line = (f"pretrain (PA-MLM): {len(data.train)} train samples, best {_best_point(fit)}, "
            f"valid MLM loss {best['valid_mlm_loss']:.4f}, {_train_seconds(fit.history):.0f} s training -> {fit.checkpoint}")
    return line


def run_finetune(settings: Settings, out: Path | str, *, mode: str = "prefix", init_from: Path | str | None = None,
                 samples: Path | str | None = None, epochs: int = 3, seed: int | None = None,
                 threads: int | None = 1, max_steps: int | None = None, eval_every: int | None = EVAL_EVERY,
                 patience: int = PATIENCE, unfreeze_plm: bool = False, progress: bool = True) -> str:
    """Click fine-tuning (`sparrow-llm clickprompt finetune`) in `mode` (ctr, plm, prefix, prefix_add) into
    `out`, early-stopped on validation AUC (checked every `eval_every` steps and at epoch ends), then scored
    once on the test split. `init_from`: a `run_pretrain` checkpoint (its config is kept; the data must be
    prepared the same way, i.e. the same `samples`). `unfreeze_plm` fine-tunes MiniLM too."""
    if mode not in FUSIONS:
        raise ValueError(f"mode must be one of {sorted(FUSIONS)}, got {mode!r}")
    if init_from is not None and not FUSIONS[mode].uses_ctr:
        raise ValueError(f"init_from keeps a pretrained CTR model; mode {mode!r} has none")
    seed = settings.seed if seed is None else seed
    base = ClickPromptConfig.from_pretrained(init_from) if init_from is not None else ClickPromptConfig()
    config = base.replace(fusion=mode, seed=seed, freeze_plm=not unfreeze_plm)
    options = TrainOptions(epochs=epochs, max_steps_per_epoch=max_steps, eval_every=eval_every, patience=patience,
                           progress=progress)
    with torch_threads(threads):
        data = load_training_data(settings, config, samples=samples)
        fit = finetune(config, data, out, options, init_from=init_from)
        test = evaluate(fit.model, data.test)
    best = fit.best_entry
    origin = f" from {init_from}" if init_from is not None else ""
    line = (f"finetune {mode}{origin}: best {_best_point(fit)}, valid AUC {best['valid_auc']:.4f}; "
            f"test AUC {test.auc:.4f} LogLoss {test.logloss:.4f} ({test.n} samples), "
            f"{_train_seconds(fit.history):.0f} s training -> {fit.checkpoint}")
    return line


def table_options(*, epochs: int, eval_every: int | None, patience: int, max_steps: int | None,
                  pretrain_steps: int | None, plm_lr: float = TrainOptions.plm_lr, progress: bool = True
                  ) -> tuple[TrainOptions, TrainOptions, TrainOptions]:
    """The comparison's options: (CTR rows, rows that read text: epochs capped at `max_steps`, PA-MLM: one
    epoch capped at `pretrain_steps`, validated in small batches: its vocabulary-wide logits set the peak)."""
    options = TrainOptions(epochs=epochs, eval_every=eval_every, patience=patience, plm_lr=plm_lr, progress=progress)
    pretrain_options = TrainOptions(epochs=1, max_steps_per_epoch=pretrain_steps, eval_batch_size=64, progress=progress)
    return options, dataclasses.replace(options, max_steps_per_epoch=max_steps), pretrain_options


def _train_seconds(history: Iterable[Mapping]) -> float:
    return sum(e["train_seconds"] for e in history)


def _best_point(fit: FitResult) -> str:
    best = fit.best_entry
    return f"step {best['step']} (epoch {best['epoch']}) of {fit.history[-1]['step']}"


def _epochs_run(checkpoint: Path | str) -> tuple[float, float]:
    """A checkpoint's training from its history file: (epochs run, fractional; training seconds per epoch)."""
    saved = json.loads((Path(checkpoint) / HISTORY_FILE).read_text())
    validations = saved["validations"]
    epochs = validations[-1]["step"] / saved["steps_per_epoch"]
    return epochs, _train_seconds(validations) / epochs


def evaluate_seeds(checkpoints: Mapping[int, Mapping[str, Path]], test: pd.DataFrame, movies: pd.DataFrame, *,
                   ctr_repeats: int = 5) -> pd.DataFrame:
    """`evaluate_table` of each seed's checkpoints (seed -> row -> folder) on `test`, one frame with a `seed`
    column, plus each checkpoint's training: epochs run (fractional when it stopped inside one) and training
    seconds per epoch."""
    frames = []
    for seed, by_row in checkpoints.items():
        table = evaluate_table(by_row, test, movies, ctr_repeats=ctr_repeats).assign(seed=seed)
        epochs, s_per_epoch = zip(*(_epochs_run(d) for d in table["checkpoint"]))
        frames.append(table.assign(epochs=epochs, s_per_epoch=s_per_epoch))
    return pd.concat(frames, ignore_index=True)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per model (in `TABLE_ROWS` order): mean and standard deviation over seeds of AUC, LogLoss,
    inference and training time, with parameter counts."""
    grouped = results.groupby("model", sort=False)
    stats = grouped[["auc", "logloss", "us_per_sample", "s_per_epoch", "epochs"]].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    fixed = grouped[["fusion", "params", "trainable_params", "n"]].first()
    order = [r for r in TABLE_ROWS if r in stats.index] + [r for r in stats.index if r not in TABLE_ROWS]
    return fixed.join(stats).loc[order]


def table_markdown(summary: pd.DataFrame, extra: Mapping[str, Sequence[str]] | None = None) -> str:
    """`summarize`'s frame as markdown, "mean ± std" per metric; `extra`: more columns (name -> one cell per row)."""
    def pm(row: pd.Series, metric: str, digits: int) -> str:
        std = row[f"{metric}_std"]
        return f"{row[f'{metric}_mean']:.{digits}f} ± {0.0 if pd.isna(std) else std:.{digits}f}"

    header = ["model", "fusion", "AUC", "LogLoss", "inference µs/sample", "params", "trainable", "train s/epoch",
              "epochs", *(extra or {})]
    rows = [[name, row["fusion"], pm(row, "auc", 4), pm(row, "logloss", 4), pm(row, "us_per_sample", 1),
             f"{int(row['params']):,}", f"{int(row['trainable_params']):,}", pm(row, "s_per_epoch", 1),
             f"{row['epochs_mean']:.1f}", *(column[i] for column in (extra or {}).values())]
            for i, (name, row) in enumerate(summary.iterrows())]
    return pd.DataFrame(rows, columns=header).to_markdown(index=False, disable_numparse=True) + "\n"


def run_eval(settings: Settings, out: Path | str, *, seeds: Sequence[int] = (1, 2, 3),
             samples: Path | str | None = None, host_samples: Path | str | None = None, fusion: str = "prefix_add",
             epochs: int = 3, max_steps: int | None = None, pretrain_steps: int | None = None,
             eval_every: int | None = EVAL_EVERY, patience: int = PATIENCE, unfreeze_plm: bool = False,
             train_frac: float | None = None, threads: int | None = 1, progress: bool = True) -> str:
    """The comparison table (`sparrow-llm clickprompt eval`): CTR-only, PLM-only, ClickPrompt with the PLM
    (`fusion`: prefix or prefix_add) and ClickPrompt CTR-only after PA-MLM, the same backbone and data, each
    seed trained under `out/seed-<n>/` and scored on the test split; mean ± std over seeds in `out/table.md`.
    `max_steps` shortens the epochs of the rows that read text, `pretrain_steps` PA-MLM's one epoch; the CTR
    rows always train full epochs. `unfreeze_plm` fine-tunes MiniLM in the text rows (PA-MLM keeps it frozen).
    Early stopping reads the validation split only (every `eval_every` steps and at epoch ends)."""
    if not seeds:
        raise ValueError("at least one seed")
    out = Path(out)
    started = time.perf_counter()
    config = ClickPromptConfig(fusion=fusion)
    options, text_options, pretrain_options = table_options(
        epochs=epochs, eval_every=eval_every, patience=patience, max_steps=max_steps, pretrain_steps=pretrain_steps,
        progress=progress)
    with torch_threads(threads):
        data = load_training_data(settings, config, samples=samples, host_samples=host_samples, train_frac=train_frac)
        checkpoints = {}
        for seed in seeds:
            seed_dir = out / f"seed-{seed}"
            pretrained = pretrain(config.replace(seed=seed), data, seed_dir / PRETRAIN_DIR, pretrain_options).checkpoint
            checkpoints[seed] = train_table(config.replace(seed=seed, freeze_plm=not unfreeze_plm), data, seed_dir,
                                            options, text_options=text_options, pretrained=pretrained)
        results = evaluate_seeds(checkpoints, data.split.test, pd.read_csv(settings.host.data_webroot / MOVIES_CSV))
    source = samples or host_samples or settings.host.data_webroot
    table = (f"ClickPrompt comparison on {source}: {len(data.train)} train / {len(data.valid)} valid / "
             f"{len(data.test)} test samples, seeds {', '.join(map(str, seeds))} (mean ± std)\n\n"
             + table_markdown(summarize(results)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    results.to_csv(out / "results.csv", index=False)
    return table + (f"\nclickprompt eval: {len(TABLE_ROWS)} models x {len(seeds)} seeds in "
                    f"{time.perf_counter() - started:.0f} s -> {out / 'table.md'}")
