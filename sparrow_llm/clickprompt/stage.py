"""ClickPrompt as a rerank stage of the host: the `clickprompt` model, a checkpoint per data folder, and the
paths of `sparrow-llm clickprompt ...`.

  ClickPromptRanker     the `Ranker`: a user's unrated host candidates scored by `ClickPromptScorer` (the CTR
                        model alone by default, the checkpoint as trained with `use_plm`), best first.
  prepare_clickprompt   the checkpoint the ranker serves for a data folder: trained on that folder's
                        ratings.csv / movies.csv only (a short PA-MLM, then a CTR-only fine-tune from it),
                        kept under `<work dir>/clickprompt/<hash of the two files>/`, reused while they are
                        unchanged. The evaluation harness hands over a copy with hidden ratings removed:
                        its hash differs, so nothing trained on the full data is ever reused there.
  run_prepare, run_pretrain, run_finetune, run_eval, run_score
                        one per CLI command; each prints a summary line and returns it.

Samples for training come from the `sparrow-llm features` job's output folder when given (`samples`),
from a host sample file split by time (`host_samples`, `run_eval` only), else they are built in pandas
from the data folder. Torch runs on `threads` (1 by default: on a 2-core machine a second thread costs
more than it gives on these tensor sizes) and the caller's setting is restored afterwards.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..bridge import BridgeClient
from ..config import ConfigError, Settings
from ..rankers import Ranking, UserContext
from ..run import run_rerank
from ..schema import MOVIES_CSV, RATINGS_CSV
from ..store import RankedItem, Store
from .model import CONFIG_FILE, FUSIONS, WEIGHTS_FILE, ClickPromptConfig
from .samples import build_samples, movie_stats_now, read_host_samples, read_sample_splits, time_split
from .schema import VOCAB_MOVIE, VOCAB_USER
from .score import ClickPromptScorer
from .train import (
    HISTORY_FILE, PRETRAIN_DIR, TABLE_ROWS, FitResult, PreparedData, TrainOptions, evaluate, evaluate_table, finetune,
    prepare_data, prepare_split, pretrain, train_table,
)

__all__ = [
    "ClickPromptRanker", "checkpoint_version", "data_key", "default_checkpoint", "prepare_clickprompt",
    "serving_checkpoint", "make_clickprompt_ranker", "load_training_data", "evaluate_seeds", "summarize", "table_markdown",
    "run_prepare", "run_pretrain", "run_finetune", "run_eval", "run_score", "table_options", "CHECKPOINTS_DIR",
    "TRAINING_FILE", "EVAL_EVERY", "PATIENCE",
]

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "clickprompt"  # under the work dir
# Validation every 40 steps, stop after 2 without a gain: on the full fixture every model peaks inside its
# first epoch, so epoch-end checks alone miss the best point. The CLI's, the bench's and prepare's defaults.
EVAL_EVERY = 40
PATIENCE = 2
TRAINING_FILE = "training.json"  # what prepare_clickprompt trained on, beside the checkpoint
_HASH_CHUNK = 1 << 20


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


class ClickPromptRanker:
    """The user's unrated host candidates by predicted click probability (ties keep the host's order).

    `use_plm=False` serves the CTR model alone (ClickPrompt's CTR-only deployment: a `ctr` or `prefix_add`
    checkpoint); `use_plm=True` runs the checkpoint as trained, MiniLM included (~10 ms per candidate on
    one core: `max_candidates` then keeps it to the first host candidates; the stage serves the rest after
    them in the host's order). A user without history and movies the model never saw score too (their
    vocabulary rows are the trained "unknown" ones).
    """

    name = "clickprompt"
    needs_emb = False
    candidate_source = "host"

    def __init__(self, checkpoint: Path | str, *, use_plm: bool = False, max_candidates: int | None = None,
                 batch_size: int = 256):
        if max_candidates is not None and max_candidates < 1:
            raise ValueError("max_candidates must be >= 1")
        self.checkpoint = Path(checkpoint)
        self.scorer = ClickPromptScorer(self.checkpoint, use_plm=use_plm, batch_size=batch_size)
        self.backend = "clickprompt-plm" if use_plm else "clickprompt-ctr"
        self.version = checkpoint_version(self.checkpoint)
        self.max_candidates = max_candidates
        space = self.scorer.model.space
        self._known_movies = frozenset(space.vocabs[VOCAB_MOVIE])
        self._known_users = frozenset(space.vocabs[VOCAB_USER])

    def rank(self, ctx: UserContext) -> Ranking | None:
        candidates = ctx.unrated_candidates()[: self.max_candidates]
        if not candidates:
            return None
        # Rounded before sorting, so equal stored scores are exactly the ties that keep the host's order.
        scores = np.round(self.scorer.score(ctx.ratings, candidates, ctx.movies, user_id=ctx.user_id), 6)
        order = np.argsort(-scores, kind="stable")
        items = tuple(RankedItem(candidates[i], float(scores[i]), self._reason(candidates[i], scores[i]))
                      for i in order)
        return Ranking(items, {"history": len(ctx.ratings), "known_user": ctx.user_id in self._known_users,
                               "scored": len(candidates)})

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        # One scorer call per user: features are built per user anyway; ~30 ms a user with 800 candidates
        # (the CTR model ~8 ms of it), 33 users/s on one core.
        return [self.rank(ctx) for ctx in contexts]

    def _reason(self, movie_id: int, score: float) -> str:
        # Only what is true of the prediction: its value, and that an unseen movie scored from its genres,
        # year and statistics alone.
        unseen = "" if movie_id in self._known_movies else "; movie new to the model"
        return f"p(click)={score:.2f}{unseen}"


def checkpoint_version(checkpoint: Path | str) -> str:
    """The checkpoint folder's name and a short hash of its config and weights: a record names what made it."""
    checkpoint = Path(checkpoint)
    return f"{checkpoint.name}-{_file_hash(checkpoint / CONFIG_FILE, checkpoint / WEIGHTS_FILE)[:10]}"


def data_key(webroot: Path | str) -> str:
    """A short hash of the data folder's ratings.csv and movies.csv contents."""
    webroot = Path(webroot)
    files = [webroot / RATINGS_CSV, webroot / MOVIES_CSV]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"the data folder lacks {', '.join(missing)}")
    return _file_hash(*files)[:16]


def _file_hash(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")  # "ab"+"c" and "a"+"bc" must differ
    return digest.hexdigest()


def default_checkpoint(settings: Settings, *, quick: bool = True) -> Path:
    """`<work dir>/clickprompt/<data_key(data folder)>/ctr-after-pamlm[-quick]`: one per data content."""
    return (settings.host.work_dir / CHECKPOINTS_DIR / data_key(settings.host.data_webroot)
            / _RECIPES[quick].name)


def _is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _read_data_folder(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    webroot = settings.host.data_webroot
    data_key(webroot)  # a clear error when a file is missing
    return pd.read_csv(webroot / RATINGS_CSV), pd.read_csv(webroot / MOVIES_CSV)


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
    ratings, movies = _read_data_folder(settings)
    config = ClickPromptConfig(fusion="prefix_add", seed=settings.seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with _torch_threads(threads):
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


def run_prepare(settings: Settings, *, quick: bool = True, progress: bool = True, echo=print) -> str:
    """`sparrow-llm clickprompt prepare`, and the model's preparation step in the demo and the evaluation:
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
    echo(line)
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


def make_clickprompt_ranker(settings: Settings, store: Store | None = None, *,
                            checkpoint: Path | str | None = None, use_plm: bool = False) -> ClickPromptRanker:
    """The registry's factory over `serving_checkpoint`. The store is not used (the model keeps no cache)."""
    return ClickPromptRanker(serving_checkpoint(settings, checkpoint), use_plm=use_plm)


# ---- training and evaluation paths ---------------------------------------------------------------

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
    ratings, movies = _read_data_folder(settings)
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
                 progress: bool = True, echo=print) -> str:
    """PA-MLM pretraining (`sparrow-llm clickprompt pretrain`) into `out`; `max_steps` caps each epoch."""
    config = ClickPromptConfig(fusion="prefix_add", seed=settings.seed if seed is None else seed)
    with _torch_threads(threads):
        data = load_training_data(settings, config, samples=samples)
        fit = pretrain(config, data, out, TrainOptions(epochs=epochs, max_steps_per_epoch=max_steps, eval_batch_size=64,
                                                       progress=progress))
    best = fit.best_entry
    line = (f"pretrain (PA-MLM): {len(data.train)} train samples, best {_best_point(fit)}, "
            f"valid MLM loss {best['valid_mlm_loss']:.4f}, {_train_seconds(fit.history):.0f} s training -> {fit.checkpoint}")
    echo(line)
    return line


def run_finetune(settings: Settings, out: Path | str, *, mode: str = "prefix", init_from: Path | str | None = None,
                 samples: Path | str | None = None, epochs: int = 3, seed: int | None = None,
                 threads: int | None = 1, max_steps: int | None = None, eval_every: int | None = EVAL_EVERY,
                 patience: int = PATIENCE, unfreeze_plm: bool = False, progress: bool = True, echo=print) -> str:
    """Click fine-tuning (`sparrow-llm clickprompt finetune`) in `mode` (ctr, plm, prefix, prefix_add) into
    `out`, early-stopped on validation AUC (checked every `eval_every` steps and at epoch ends), then scored
    once on the test split. `init_from`: a `run_pretrain` checkpoint (its config is kept; the data must be
    prepared the same way, i.e. the same `samples`). `unfreeze_plm` fine-tunes MiniLM too."""
    if mode not in FUSIONS:
        raise ValueError(f"mode must be one of {sorted(FUSIONS)}, got {mode!r}")
    if init_from is not None and not FUSIONS[mode].uses_ctr:
        raise ValueError(f"init_from keeps a pretrained CTR model; mode {mode!r} has none")
    seed = settings.seed if seed is None else seed
    base = ClickPromptConfig.load(Path(init_from) / CONFIG_FILE) if init_from is not None else ClickPromptConfig()
    config = base.replace(fusion=mode, seed=seed, freeze_plm=not unfreeze_plm)
    options = TrainOptions(epochs=epochs, max_steps_per_epoch=max_steps, eval_every=eval_every, patience=patience,
                           progress=progress)
    with _torch_threads(threads):
        data = load_training_data(settings, config, samples=samples)
        fit = finetune(config, data, out, options, init_from=init_from)
        test = evaluate(fit.model, data.test)
    best = fit.best_entry
    origin = f" from {init_from}" if init_from is not None else ""
    line = (f"finetune {mode}{origin}: best {_best_point(fit)}, valid AUC {best['valid_auc']:.4f}; "
            f"test AUC {test.auc:.4f} LogLoss {test.logloss:.4f} ({test.n} samples), "
            f"{_train_seconds(fit.history):.0f} s training -> {fit.checkpoint}")
    echo(line)
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
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (name, row) in enumerate(summary.iterrows()):
        cells = [name, row["fusion"], pm(row, "auc", 4), pm(row, "logloss", 4), pm(row, "us_per_sample", 1),
                 f"{int(row['params']):,}", f"{int(row['trainable_params']):,}", pm(row, "s_per_epoch", 1),
                 f"{row['epochs_mean']:.1f}", *(column[i] for column in (extra or {}).values())]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run_eval(settings: Settings, out: Path | str, *, seeds: Sequence[int] = (1, 2, 3),
             samples: Path | str | None = None, host_samples: Path | str | None = None, fusion: str = "prefix_add",
             epochs: int = 3, max_steps: int | None = None, pretrain_steps: int | None = None,
             eval_every: int | None = EVAL_EVERY, patience: int = PATIENCE, unfreeze_plm: bool = False,
             train_frac: float | None = None, threads: int | None = 1, progress: bool = True, echo=print) -> str:
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
    with _torch_threads(threads):
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
    echo(table)
    line = (f"clickprompt eval: {len(TABLE_ROWS)} models x {len(seeds)} seeds in {time.perf_counter() - started:.0f} s "
            f"-> {out / 'table.md'}")
    echo(line)
    return line


def run_score(settings: Settings, model_dir: Path | str | None = None, *, users: Sequence[int] | None = None,
              sample: int | None = None, use_plm: bool = False, max_candidates: int | None = None,
              client: BridgeClient | None = None, store: Store | None = None, progress: bool = True,
              echo=print) -> str:
    """`sparrow-llm clickprompt score`: `run.run_rerank` with a ranker over `model_dir` (default: the data
    folder's serving checkpoint, `serving_checkpoint`)."""
    ranker = ClickPromptRanker(serving_checkpoint(settings, model_dir), use_plm=use_plm, max_candidates=max_candidates)
    line = run_rerank(settings, ranker.name, users=users, sample=sample, client=client, store=store, ranker=ranker,
                      progress=progress).line()
    echo(line)
    return line
