"""The retrieval models of a data folder, trained when missing and kept per data content.

`<work dir>/retrieval/<data_key(data folder)>/<model>/` holds a model's weights (safetensors), its
config.json and training.json (what was chosen on validation, its validation NDCG@10, training time and
peak memory). Training runs in a temporary folder renamed into place, so an interrupted run leaves
nothing a later call would take for a model; the evaluation's copy (hidden ratings removed) has another
key, so nothing trained on the full data is ever reused there.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import pandas as pd

from ...config import ConfigError, Settings
from ...datafolder import data_key, read_data_folder
from ...meter import measure
from ...progress import progress_bar
from ...publish import staged_folder
from ...schema import COL_USER
from ..pretrained import CONFIG_FILE, WEIGHTS_FILE, read_json
from ..pretrained import checkpoint_problem as pretrained_problem
from .interactions import Catalogue, Fold, History, folds, histories, ndcg_at
from .linear import (EASE_GRID, EASE_RECENT_GRID, Grid, LinearModel, check_ease_memory, fit_ease, fit_popularity,
                     select_ease)
from .samples import COL_MOVIES, build_sequences, read_sequences

__all__ = ["RetrievalData", "load_data", "FOLDS", "model_dir", "is_checkpoint", "checkpoint_problem", "prepare_model", "prepare", "training_info",
           "prepare_popularity", "prepare_ease", "prepare_ease_recent", "prepare_sasrec", "MODELS",
           "CHECKPOINTS_DIR", "TRAINING_FILE"]

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "retrieval"  # under the work dir
TRAINING_FILE = "training.json"


# Validation folds EASE is chosen on: two hold-outs per user halve the noise of one (~500 users on the fixture).
FOLDS = 2


@dataclass(frozen=True)
class RetrievalData:
    catalogue: Catalogue
    full: list[History]  # every user's whole history
    folds: list[Fold]  # validation, the latest hold-out first

    @classmethod
    def build(cls, sequences: pd.DataFrame, movies: pd.DataFrame, n_folds: int = FOLDS) -> "RetrievalData":
        catalogue = Catalogue.from_movies(movies)
        return cls(catalogue, histories(sequences, catalogue), folds(sequences, catalogue, n_folds))


def load_data(settings: Settings, samples: Path | str | None = None, n_folds: int = FOLDS) -> RetrievalData:
    """The data folder's movies and its sequences: from `samples` (a `retrieval samples` Parquet folder,
    which must come from this folder's ratings) or built here in pandas."""
    ratings, movies = read_data_folder(settings.host.data_webroot)
    if samples is None:
        return RetrievalData.build(build_sequences(ratings), movies, n_folds)
    sequences = read_sequences(samples)
    if sequences[COL_MOVIES].map(len).sum() != len(ratings) or set(sequences[COL_USER]) != set(ratings[COL_USER]):
        raise ConfigError(f"the samples in {samples} were not built from {settings.host.data_webroot}'s ratings")
    return RetrievalData.build(sequences, movies, n_folds)


def model_dir(settings: Settings, model: str) -> Path:
    return settings.host.work_dir / CHECKPOINTS_DIR / data_key(settings.host.data_webroot) / model


def checkpoint_problem(path: Path, key: str | None = None) -> str | None:
    """Why `path` cannot be reused (`pretrained.checkpoint_problem`: files complete and readable, and trained on
    the data of `key`, when given), None when it can."""
    return pretrained_problem(path, (CONFIG_FILE, WEIGHTS_FILE, TRAINING_FILE), data_key=key, record=TRAINING_FILE)


def is_checkpoint(path: Path) -> bool:
    return checkpoint_problem(path) is None


def training_info(path: Path) -> dict:
    return read_json(path / TRAINING_FILE)


# ---- one fit per model: (data, destination, settings, progress) -> what training.json records ----

def _fit_popularity(data: RetrievalData, dest: Path, settings: Settings, progress: bool) -> dict:
    # Validation only reports it: counted on the latest fold's training part, as every model is validated.
    fold = data.folds[0]
    score = ndcg_at(fit_popularity(fold.train, data.catalogue).scores(fold.valid.histories), fold.valid.rated,
                    fold.valid.targets)
    model = fit_popularity(data.full, data.catalogue)
    model.save_pretrained(dest)
    return {"valid_ndcg10": score, "chosen": model.config.describe()}


def _fit_ease(grid: Grid, data: RetrievalData, dest: Path, settings: Settings, progress: bool) -> dict:
    check_ease_memory(len(data.catalogue))
    with progress_bar(total=len(grid.l2) * len(grid.disliked_weight), desc="ease validation", unit="fit",
                      enabled=progress) as bar:
        config, tried = select_ease(data.folds, data.catalogue, grid, step=lambda: bar.update(1))
    weights = fit_ease(data.full, len(data.catalogue), config.l2, config.disliked_weight)
    LinearModel(config, weights, data.catalogue.movie_ids).save_pretrained(dest)
    return {"valid_ndcg10": max(t["valid_ndcg10"] for t in tried), "chosen": config.describe(), "trials": tried}


def _fit_sasrec(data: RetrievalData, dest: Path, settings: Settings, progress: bool) -> dict:
    from .configuration import SASRecConfig
    from .train import TrainOptions, train_sasrec  # torch loads for this model only

    # Early stopping on the latest fold only: an earlier fold's hold-outs are training targets here.
    fold = data.folds[0]
    config = SASRecConfig(n_items=len(data.catalogue), seed=settings.seed)
    result = train_sasrec(config, fold.train, fold.valid, TrainOptions(progress=progress))
    result.model.save_pretrained(dest)
    return {"valid_ndcg10": result.valid_ndcg10, "chosen": f"best epoch {result.best_epoch}",
            "config": asdict(config), "epochs": result.history}


_FITS: dict[str, Callable[[RetrievalData, Path, Settings, bool], dict]] = {
    "popularity": _fit_popularity,
    "ease": partial(_fit_ease, EASE_GRID),
    "ease-recent": partial(_fit_ease, EASE_RECENT_GRID),
    "sasrec": _fit_sasrec,
}
MODELS = tuple(_FITS)


def prepare_model(settings: Settings, model: str, *, samples: Path | str | None = None,
                  progress: bool = True) -> tuple[Path, bool]:
    """The model's folder for the data folder, trained now when it does not exist yet; whether it trained."""
    if model not in _FITS:
        raise ConfigError(f"unknown retrieval model {model!r}; known: {', '.join(MODELS)}")
    dest, key = model_dir(settings, model), data_key(settings.host.data_webroot)
    problem = checkpoint_problem(dest, key)
    if problem is None:
        return dest, False
    if dest.exists():  # damaged, incomplete or another data's: trained again, never "reused"
        log.warning("retrieval: retraining %s: %s", model, problem)
    # Published whole (`publish.staged_folder`, which replaces a bad folder); a process that finished the same
    # training first keeps its model.
    with staged_folder(dest, keep_existing=lambda path: checkpoint_problem(path, key) is None) as staging:
        with measure() as cost:
            data = load_data(settings, samples)
            info = _FITS[model](data, staging, settings, progress)
        info.update({"model": model, "data_folder": str(settings.host.data_webroot),
                     "data_key": key, "users": len(data.full),
                     "valid_users": len(data.folds[0].valid), "items": len(data.catalogue), "train_s": cost.seconds,
                     "peak_gib": cost.peak_gib, "added_gib": cost.added_gib})
        (staging / TRAINING_FILE).write_text(json.dumps(info, indent=2))
    log.info("retrieval: trained %s in %.1f s", dest, info["train_s"])
    return dest, True


def prepare(settings: Settings, progress: bool = True, *, model: str, samples: Path | str | None = None) -> str:
    """A model's preparation step (the registry's, `sparrow-llm retrieval prepare`): one summary line."""
    path, trained = prepare_model(settings, model, samples=samples, progress=progress)
    info = training_info(path)
    verb = "trained" if trained else "reusing"
    return (f"{model}: {verb} {path} ({info['chosen']}; valid NDCG@10 {info['valid_ndcg10']:.4f} on "
            f"{info['valid_users']} users; trained in {info['train_s']:.1f} s, peak {info['peak_gib']:.2f} GiB)")


prepare_popularity = partial(prepare, model="popularity")
prepare_ease = partial(prepare, model="ease")
prepare_ease_recent = partial(prepare, model="ease-recent")
prepare_sasrec = partial(prepare, model="sasrec")
