"""Training: data preparation, PA-MLM pretraining, CTR fine-tuning with early stopping, evaluation.

The four rows of the paper's comparison are four `finetune`/`pretrain` runs (see `train_table`):
CTR-only (`fusion="ctr"`), PLM-only (`"plm"`), ClickPrompt with the PLM (`pretrain`, then
`finetune(..., init_from=pretrained)` with `"prefix"` or `"prefix_add"`) and ClickPrompt CTR-only
(`pretrain`, then `finetune(..., init_from=pretrained)` with `"ctr"`: the pretrained CTR embeddings
and backbone are kept, the PLM is dropped and costs nothing at inference).
"""
from __future__ import annotations

import ctypes
import functools
import json
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss, roc_auc_score

from ...progress import progress_bar
from ...training import EarlyStopping, torch_threads

from .features import EncodedSamples, FeatureSpace, encode_samples
from .configuration import ClickPromptConfig
from .model import FEATURES_FILE, ClickPrompt, load_tokenizer, plm_path
from ...catalog import movie_catalog
from .samples import Split, build_samples, movie_stats_now, time_split

__all__ = [
    "TrainOptions", "PreparedData", "FitResult", "Metrics", "prepare_data", "prepare_split", "pretrain", "finetune",
    "evaluate", "evaluate_table", "train_table", "set_seed", "TABLE_ROWS", "HISTORY_FILE",
    "PRETRAIN_DIR", "row_dir",
]

HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    plm_lr: float = 5e-5  # used only when the PLM is not frozen: the usual BERT fine-tuning rate
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    patience: int = 1  # epochs without a better validation score before stopping
    max_steps_per_epoch: int | None = None  # cut epochs short (tests, quick checks)
    # Validate every this many steps as well as at each epoch's end (None: at the end only). On the full
    # fixture a CTR model peaks within its first epoch, so epoch-sized checks miss the best point.
    eval_every: int | None = None
    eval_batch_size: int = 256
    threads: int | None = None  # torch threads while training (restored after); None: left alone
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch sizes and patience must be >= 1")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 or None, got {self.eval_every}")


@dataclass(frozen=True)
class PreparedData:
    """Samples split by time, the feature space fitted on train, and each split encoded (with text)."""

    space: FeatureSpace
    catalog: pd.DataFrame
    split: Split
    train: EncodedSamples
    valid: EncodedSamples
    test: EncodedSamples


@dataclass(frozen=True)
class Metrics:
    auc: float
    logloss: float
    us_per_sample: float  # model time only (no feature building), microseconds
    n: int


@dataclass
class FitResult:
    """`history`: one entry per validation (epoch, global step, training loss and seconds since the previous
    validation, the validation metrics); the model and checkpoint are those of entry `best`."""

    model: ClickPrompt
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best: int = 0  # index into history

    @property
    def best_entry(self) -> dict[str, Any]:
        return self.history[self.best]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(ratings: pd.DataFrame, movies: pd.DataFrame, config: ClickPromptConfig = ClickPromptConfig(), *,
                 test_frac: float = 0.2, valid_frac: float = 0.1, n_buckets: int = 10) -> PreparedData:
    """Build samples, split by time and `prepare_split` them; the movie statistics snapshot for serving
    covers all of `ratings`."""
    split = time_split(build_samples(ratings, movies), test_frac, valid_frac)
    return prepare_split(split, movies, movie_stats_now(ratings), config, n_buckets=n_buckets)


def prepare_split(split: Split, movies: pd.DataFrame, movie_stats: pd.DataFrame,
                  config: ClickPromptConfig = ClickPromptConfig(), *, n_buckets: int = 10,
                  text: bool = True) -> PreparedData:
    """Fit the feature space on `split.train` (with `movie_stats` as the serving snapshot) and encode every
    split, with text tokenized by `config`'s PLM tokenizer unless `text` is False (cheap, and every fusion mode
    can then share the data). Samples may come from anywhere in `SAMPLE_DTYPES`: our builder, the host's
    files, the Spark job."""
    space = FeatureSpace.fit(split.train, movie_stats, n_buckets=n_buckets)
    catalog = movie_catalog(movies)
    tokenizer = load_tokenizer(plm_path(config)) if text else None
    encoded = [encode_samples(part, space, catalog, tokenizer, config.max_text_len)
               for part in (split.train, split.valid, split.test)]
    return PreparedData(space, catalog, split, *encoded)


def pretrain(config: ClickPromptConfig, data: PreparedData, out_dir: Path | str,
             options: TrainOptions = TrainOptions()) -> FitResult:
    """PA-MLM: train the CTR embeddings + backbone, the prompt generator and the MLM head (and the PLM
    unless `config.freeze_plm`) to predict masked text tokens from the prompts; keeps the epoch with the
    lowest validation MLM loss. `config.fusion` must use prompts (prefix or prefix_add)."""
    if not config.fusion_mode.uses_prompts:
        raise ValueError(f"pretraining needs a prompt fusion (prefix, prefix_add), got {config.fusion!r}")
    set_seed(config.seed)
    model = ClickPrompt(config, data.space)
    masking = torch.Generator().manual_seed(config.seed)

    def validate(m: ClickPrompt) -> dict[str, float]:
        # The same masks every epoch, so epochs compare on equal terms.
        fixed = torch.Generator().manual_seed(config.seed + 1)
        with torch.no_grad():
            losses = [(m.mlm_loss(b, fixed).item(), len(b["cat"])) for b in data.valid.batches(options.eval_batch_size)]
        loss = sum(l * n for l, n in losses) / max(sum(n for _, n in losses), 1)
        return {"valid_mlm_loss": loss, "score": -loss}

    return _fit(model, lambda m, b: m.mlm_loss(b, masking), validate, data.train, out_dir, options, "pretrain")


def finetune(config: ClickPromptConfig, data: PreparedData, out_dir: Path | str,
             options: TrainOptions = TrainOptions(), init_from: Path | str | None = None,
             validate: Callable[[ClickPrompt], dict[str, float]] | None = None) -> FitResult:
    """Train for clicks (BCE) in `config.fusion` mode, early-stopped on validation AUC, or on the "score" of
    `validate` (metrics of a model in eval mode, e.g. a ranking metric; every key goes into the history).

    `init_from`: a `pretrain` checkpoint; every tensor it shares with this model is loaded (with
    `fusion="ctr"` that is the CTR embeddings + backbone only). Its feature space must be `data.space`.
    """
    set_seed(config.seed)
    model = ClickPrompt(config, data.space)
    if init_from is not None:
        _init_from(model, Path(init_from))

    def valid_auc(m: ClickPrompt) -> dict[str, float]:
        metrics = evaluate(m, data.valid, options.eval_batch_size)
        return {"valid_auc": metrics.auc, "valid_logloss": metrics.logloss,
                "score": metrics.auc if np.isfinite(metrics.auc) else -metrics.logloss}

    return _fit(model, lambda m, b: m.loss(b), validate or valid_auc, data.train, out_dir, options,
                f"finetune {config.fusion}")


def _init_from(model: ClickPrompt, checkpoint: Path) -> None:
    if FeatureSpace.load(checkpoint / FEATURES_FILE) != model.space:
        raise ValueError(f"{checkpoint} was trained on another feature space; prepare the data the same way")
    loaded = set(model.load_weights(checkpoint))
    expected = {k for k in model.state_dict() if k.startswith(("embedding.", "ctr."))}
    if not expected <= loaded:
        raise ValueError(f"{checkpoint} has no CTR model matching this config (missing {sorted(expected - loaded)[:3]})")


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _release_free_memory() -> None:
    """Hand the heap's free pages back to the OS after a step. PA-MLM's tensors change size every batch (the
    masked-token count varies), which fragments glibc's heap: without this, RSS grew ~25 MB a step on the
    full fixture (4.45 GiB peak after 120 steps) against a flat ~1.2 GiB with it, at ~5% of the step time."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _fit(model: ClickPrompt, loss_fn: Callable[[ClickPrompt, Mapping[str, torch.Tensor]], torch.Tensor],
         validate: Callable[[ClickPrompt], dict[str, float]], train: EncodedSamples, out_dir: Path | str,
         options: TrainOptions, stage: str) -> FitResult:
    """The loop both stages share: AdamW, gradient clipping, a validation at each epoch's end (and every
    `options.eval_every` steps), the best validated state kept; stops after `options.patience` validations
    without a better score."""
    with torch_threads(options.threads):
        optimizer = _optimizer(model, options)
        steps = -(-len(train) // options.batch_size)
        if options.max_steps_per_epoch:
            steps = min(steps, options.max_steps_per_epoch)
        history: list[dict[str, Any]] = []
        stopping, step = EarlyStopping(options.patience), 0
        for epoch in range(1, options.epochs + 1):
            model.train()
            total, seen, seconds = 0.0, 0, 0.0
            batches = train.batches(options.batch_size, shuffle=True, seed=model.config.seed + epoch)
            with progress_bar(total=steps, desc=f"{stage} epoch {epoch}", enabled=options.progress,
                              leave=False) as bar:
                for i, batch in zip(range(1, steps + 1), batches):
                    started = time.perf_counter()
                    loss = loss_fn(model, batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
                    optimizer.step()
                    _release_free_memory()
                    seconds += time.perf_counter() - started
                    step, total, seen = step + 1, total + loss.item() * len(batch["cat"]), seen + len(batch["cat"])
                    bar.update()
                    bar.set_postfix(loss=f"{total / seen:.4f}")
                    if i < steps and not (options.eval_every and step % options.eval_every == 0):
                        continue
                    scores = validate(model.eval())
                    model.train()
                    history.append({"epoch": epoch, "step": step, "train_loss": total / max(seen, 1),
                                    "train_seconds": seconds, **{k: v for k, v in scores.items() if k != "score"},
                                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
                    total, seen, seconds = 0.0, 0, 0.0
                    if stopping.update(scores["score"], len(history) - 1, lambda: {
                            k: v.detach().clone() for k, v in model.state_dict().items() if model.is_saved(k)}):
                        break
            if stopping.stop:
                break
        model.load_state_dict(stopping.state, strict=False)
        model.eval()
    out = model.save_pretrained(out_dir)
    (out / HISTORY_FILE).write_text(json.dumps({"stage": stage, "best": stopping.best_step, "steps_per_epoch": steps,
                                                "options": asdict(options), "validations": history}, indent=2))
    return FitResult(model, out, history, stopping.best_step)


def _optimizer(model: ClickPrompt, options: TrainOptions) -> torch.optim.Optimizer:
    plm, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plm if name.startswith("plm.") else rest).append(p)
    groups = [{"params": rest, "lr": options.lr}]
    if plm:
        groups.append({"params": plm, "lr": options.plm_lr})  # a pretrained PLM needs a far smaller step
    return torch.optim.AdamW(groups, weight_decay=options.weight_decay)


def _predict_all(model: ClickPrompt, data: EncodedSamples, batch_size: int) -> tuple[np.ndarray, float]:
    """Probabilities for every sample in order, and the seconds spent inside the model."""
    model.eval()
    parts, seconds = [], 0.0
    for batch in data.batches(batch_size):
        started = time.perf_counter()
        parts.append(model.predict(batch).numpy())
        seconds += time.perf_counter() - started
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), seconds


def evaluate(model: ClickPrompt, data: EncodedSamples, batch_size: int = 256, repeats: int = 1) -> Metrics:
    """Metrics of one pass; the time is the best of `repeats` passes (a CTR-only pass over a test split
    takes milliseconds, so a single one measures the scheduler more than the model)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    probs, seconds = _predict_all(model, data, batch_size)
    for _ in range(repeats - 1):
        seconds = min(seconds, _predict_all(model, data, batch_size)[1])
    labels = np.asarray(data.label)
    # AUC is undefined on one class (a tiny validation split can have one): NaN, not an exception.
    auc = float(roc_auc_score(labels, probs)) if 0 < labels.sum() < len(labels) else float("nan")
    return Metrics(auc, float(log_loss(labels, probs, labels=[0, 1])), seconds / max(len(data), 1) * 1e6, len(data))


TABLE_ROWS = ("CTR-only", "PLM-only", "ClickPrompt (PLM)", "ClickPrompt CTR-only after PA-MLM")
# row -> (fusion, starts from the PA-MLM checkpoint); None: the table's prompt fusion (prefix or prefix_add).
_ROW_PLANS: dict[str, tuple[str | None, bool]] = {
    TABLE_ROWS[0]: ("ctr", False), TABLE_ROWS[1]: ("plm", False),
    TABLE_ROWS[2]: (None, True), TABLE_ROWS[3]: ("ctr", True),
}
PRETRAIN_DIR = "pretrain"


def row_dir(row: str) -> str:
    """A table row's checkpoint folder under `train_table`'s out_dir, e.g. "clickprompt-ctr-only-after-pa-mlm"."""
    return row.lower().replace(" ", "-").replace("(", "").replace(")", "")


def evaluate_table(checkpoints: Mapping[str, Path | str], samples: pd.DataFrame, movies: pd.DataFrame, *,
                   batch_size: int = 256, threads: int | None = None, ctr_repeats: int = 1) -> pd.DataFrame:
    """One row per checkpoint (name -> directory, e.g. keyed by `TABLE_ROWS`): AUC, LogLoss, inference
    microseconds per sample and parameter counts on `samples` (the test split). Each model encodes the
    samples with its own feature space. Models without a PLM are timed as the best of `ctr_repeats` passes."""
    catalog = movie_catalog(movies)
    rows = []
    with torch_threads(threads):
        for name, directory in checkpoints.items():
            model = ClickPrompt.from_pretrained(directory)
            repeats = 1 if model.fusion.uses_plm else ctr_repeats
            metrics = evaluate(model, model.encode(samples, catalog), batch_size, repeats)
            rows.append({"model": name, "fusion": model.config.fusion, "auc": metrics.auc, "logloss": metrics.logloss,
                         "us_per_sample": metrics.us_per_sample, "params": model.parameter_count(),
                         "trainable_params": model.parameter_count(trainable_only=True), "n": metrics.n,
                         "checkpoint": str(directory)})
    return pd.DataFrame(rows)


def _table_rows(config: ClickPromptConfig, rows: Iterable[str]) -> list[str]:
    if not config.fusion_mode.uses_prompts:
        raise ValueError(f"config.fusion must be prefix or prefix_add, got {config.fusion!r}")
    wanted = list(rows)
    unknown = set(wanted) - set(_ROW_PLANS)
    if unknown:
        raise ValueError(f"unknown table rows {sorted(unknown)}; known: {list(TABLE_ROWS)}")
    return wanted


def train_table(config: ClickPromptConfig, data: PreparedData, out_dir: Path | str,
                options: TrainOptions = TrainOptions(), *, pretrain_options: TrainOptions | None = None,
                text_options: TrainOptions | None = None, rows: Iterable[str] = TABLE_ROWS,
                pretrained: Path | str | None = None) -> dict[str, Path]:
    """Train the table's `rows` under `out_dir/<row_dir(row)>/` and return their checkpoints.

    `config.fusion` picks the ClickPrompt-with-PLM mode (prefix or prefix_add). Rows that start from PA-MLM
    use `pretrained`, else one pretraining under `out_dir/pretrain/` (`pretrain_options`, default
    `text_options`). `text_options` (default `options`) train the rows that read text: a PLM step costs
    ~100x a CTR step on a CPU, so they may need shorter epochs."""
    wanted = _table_rows(config, rows)
    out_dir = Path(out_dir)
    text_options = text_options or options
    if pretrained is None and any(_ROW_PLANS[r][1] for r in wanted):
        pretrained = pretrain(config, data, out_dir / PRETRAIN_DIR, pretrain_options or text_options).checkpoint
    checkpoints = {}
    for row in wanted:
        fusion, from_pretrain = _ROW_PLANS[row]
        row_config = config.replace(fusion=fusion or config.fusion)
        checkpoints[row] = finetune(row_config, data, out_dir / row_dir(row),
                                    text_options if row_config.fusion_mode.uses_plm else options,
                                    init_from=pretrained if from_pretrain else None).checkpoint
    return checkpoints
