"""Training the learned stage: LightGBM LambdaRank on the training groups, early stopping on the validation users,
then the fusion weight of its score with the base's (`fusion.choose_weight`: above 0 only on a significant gain).

The model is kept in `<work dir>/ltr/<key>/`, the key naming everything it depends on: the data folder's content,
the base, K, the feature set and the options (cold-start copies included) and, with the LLM's features, the
text vectors' keys (each source model's content and the data's). It holds LightGBM's own text format
(`model.txt`), `config.json` (feature names, K, base, keys, the fusion calibration) and `training.json`
(validation NDCG@10, cost). Training runs in a temporary folder
renamed into place, as the retrieval checkpoints are.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...config import ConfigError, Settings
from ...datafolder import data_key
from ...meter import measure
from ...publish import staged_folder
from ..fusion import Calibration, choose_weight
from ..pretrained import checkpoint_problem, read_json
from .features import feature_names
from .knowledge import knowledge_key, load_texts, run_knowledge, sources_of
from .samples import (COL_BASE, COL_GROUP, COL_HISTORY, COL_LABEL, COL_SPLIT, FULL, TRAIN, VALID, LtrOptions,
                      build_groups)

__all__ = ["LtrConfig", "model_dir", "is_model", "model_problem", "train_model", "prepare", "read_config", "MODEL_FILE",
           "CONFIG_FILE", "TRAINING_FILE", "EARLY_STOPPING", "fit", "validation", "group_rows", "target_indexes",
           "text_keys",
           "prepare_ltr", "prepare_llm_ltr"]

log = logging.getLogger(__name__)

MODEL_FILE, CONFIG_FILE, TRAINING_FILE = "model.txt", "config.json", "training.json"
EARLY_STOPPING = 30  # rounds without a validation NDCG@10 gain
# Small, regularised trees and a slow rate: with ~2k training groups the validation curve of faster settings peaked
# within 6 to 80 rounds, at a place that moved with the seed (bench/bench_ltr.py).
_PARAMS = dict(objective="lambdarank", n_estimators=500, learning_rate=0.02, num_leaves=7, min_child_samples=100,
               subsample=0.8, subsample_freq=1, colsample_bytree=0.8, reg_lambda=5.0, n_jobs=2, verbose=-1)


@dataclass(frozen=True)
class LtrConfig:
    features: tuple[str, ...]
    k: int
    base: str
    data_key: str
    knowledge_key: str | None  # the text sources' keys (`text_keys`); None: without the LLM's features
    calibration: dict  # `Calibration.to_json()`

    @property
    def weight(self) -> float:
        return Calibration.from_json(self.calibration).weight


def read_config(directory: Path) -> LtrConfig:
    data = read_json(directory / CONFIG_FILE)
    try:
        config = LtrConfig(**{**data, "features": tuple(data["features"])})
        config.weight  # the calibration reads
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{directory / CONFIG_FILE}: {exc}") from None
    return config


def text_keys(settings: Settings, names: Sequence[str]) -> str | None:
    """The keys of the text vectors the features `names` read, None when they read none."""
    return "+".join(knowledge_key(settings, source) for source in sources_of(names)) or None


def model_dir(settings: Settings, llm: bool, options: LtrOptions) -> Path:
    """The folder of the module docstring for the settings' data folder and base (the digest: the feature set
    and the options)."""
    names = feature_names(llm)
    digest = hashlib.sha256(repr((names, sorted(asdict(options).items()))).encode()).hexdigest()[:8]
    knowledge = text_keys(settings, names) or "nollm"
    return (settings.host.work_dir / "ltr" /
            f"{data_key(settings.host.data_webroot)}-{settings.base}-k{options.k}-{digest}-{knowledge}")


def model_problem(directory: Path, key: str | None = None) -> str | None:
    """Why `directory` cannot be reused (`pretrained.checkpoint_problem`: files complete, the JSON ones readable,
    trained on the data of `key` when given), None when it can."""
    return checkpoint_problem(directory, (MODEL_FILE, CONFIG_FILE, TRAINING_FILE), data_key=key, record=CONFIG_FILE)


def is_model(directory: Path) -> bool:
    return model_problem(directory) is None


def group_rows(groups: pd.DataFrame, column: str | np.ndarray) -> list[np.ndarray]:
    values = groups[column].to_numpy() if isinstance(column, str) else column
    bounds = np.flatnonzero(np.diff(groups[COL_GROUP].to_numpy())) + 1
    return np.split(values, bounds) if len(values) else []


def validation(groups: pd.DataFrame) -> pd.DataFrame:
    """The validation groups every choice reads: the validation users' full histories."""
    return groups[(groups[COL_SPLIT] == VALID) & (groups[COL_HISTORY] == FULL)]


def fit(groups: pd.DataFrame, names: Sequence[str], seed: int, **params):
    """LightGBM LambdaRank on every training group (cold-start copies included), early stopping on `validation`;
    `params` override the stage's LightGBM parameters."""
    import lightgbm as lgb

    train, valid = groups[groups[COL_SPLIT] == TRAIN], validation(groups)
    # Early stopping reads the validation groups whose target is in the window (the others score 0 for any order).
    stop_on = valid[valid.groupby(COL_GROUP)[COL_LABEL].transform("max") > 0]
    if not len(train) or not len(stop_on):
        raise ValueError(f"too few samples to train on: {train[COL_GROUP].nunique()} training groups, "
                         f"{stop_on[COL_GROUP].nunique()} validation groups with their target in the window")
    model = lgb.LGBMRanker(**{**_PARAMS, **params}, random_state=seed)
    model.fit(train[list(names)], train[COL_LABEL], group=train.groupby(COL_GROUP, sort=False).size().to_numpy(),
              eval_X=(stop_on[list(names)],), eval_y=(stop_on[COL_LABEL],),
              eval_group=[stop_on.groupby(COL_GROUP, sort=False).size().to_numpy()], eval_at=[10],
              callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)])
    return model


def target_indexes(groups: pd.DataFrame) -> list[int]:
    """Each group's index of its target, -1 when it is not there."""
    return [int(np.argmax(labels)) if labels.max() > 0 else -1 for labels in group_rows(groups, COL_LABEL)]


def train_model(settings: Settings, *, llm: bool, options: LtrOptions | None = None, master: str = "local[*]",
                progress: bool = True) -> tuple[Path, bool]:
    """The model's folder, trained now when missing; whether it trained."""
    options = options or LtrOptions(seed=settings.seed)
    dest, key = model_dir(settings, llm, options), data_key(settings.host.data_webroot)
    problem = model_problem(dest, key)
    if problem is None:
        return dest, False
    if dest.exists():  # damaged, incomplete or another data's: trained again, never "reused"
        log.warning("ltr: retraining: %s", problem)
    names = feature_names(llm)
    # Published whole (`publish.staged_folder`, which replaces a bad folder); a process that finished the same
    # training first keeps its model.
    with staged_folder(dest, keep_existing=lambda path: model_problem(path, key) is None) as staging:
        with measure() as cost:
            for source in sources_of(names):
                log.info("%s", run_knowledge(settings, source=source, master=master, progress=progress).line())
            groups = build_groups(settings, options, names, base=settings.base,
                                  texts=load_texts(settings, sources_of(names)), master=master,
                                  progress=progress)
            model = fit(groups, names, options.seed)
            valid = validation(groups)
            scores = model.predict(valid[list(names)]) if len(valid) else np.zeros(0)
            calibration = choose_weight(group_rows(valid, scores), group_rows(valid, COL_BASE), target_indexes(valid),
                                        seed=options.seed)
        config = LtrConfig(names, options.k, settings.base, key, text_keys(settings, names),
                           calibration.to_json())
        model.booster_.save_model(str(staging / MODEL_FILE))
        (staging / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
        train = groups[groups[COL_SPLIT] == TRAIN]
        info = {"options": asdict(options), "train_groups": int(train[COL_GROUP].nunique()),
                "valid_groups": int(valid[COL_GROUP].nunique()), "best_iteration": int(model.best_iteration_ or 0),
                "valid_ndcg10": {"base": calibration.base_ndcg, "ltr": calibration.reranker_ndcg,
                                 "served": calibration.table[calibration.weight]},
                "weight": calibration.weight, "gain_over_base": calibration.gain,
                "train_s": cost.seconds, "peak_gib": cost.peak_gib}
        (staging / TRAINING_FILE).write_text(json.dumps(info, indent=2))
    log.info("ltr: trained %s in %.1f s", dest, cost.seconds)
    return dest, True


def prepare(settings: Settings, progress: bool = True, make_base=None, *, llm: bool) -> str:
    """The preparation step of `ltr` / `llm-ltr` (knowledge vectors, samples, training): one summary line."""
    path, trained = train_model(settings, llm=llm, progress=progress)
    info = read_json(path / TRAINING_FILE)
    ndcg = info["valid_ndcg10"]
    return (f"{'llm-ltr' if llm else 'ltr'}: {'trained' if trained else 'reusing'} {path} (validation NDCG@10 on "
            f"{info['valid_groups']} users: base {ndcg['base']:.4f}, ltr {ndcg['ltr']:.4f}, served {ndcg['served']:.4f}"
            f" at weight {info['weight']:g}; {info['train_groups']} training groups, {info['train_s']:.1f} s, "
            f"peak {info['peak_gib']:.2f} GiB)")


prepare_ltr = partial(prepare, llm=False)
prepare_llm_ltr = partial(prepare, llm=True)
