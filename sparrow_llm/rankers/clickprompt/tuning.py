"""`clickprompt`'s preparation step (the registry's, `sparrow-llm clickprompt prepare`): the serving checkpoint
(`checkpoint.prepare_clickprompt`), then its fusion weight over the base, chosen on validation users
(`fusion.choose_weight`).

The validation users are the serving checkpoint's own: `ranking.prepare_ranking_data` holds out each user's last
liked rating with everything from that second on (`datafolder.leave_last_out`), and the model never trains on
them. The base is trained for this on the same cut (`datafolder.cut_folder`), so it proposes a held-out movie as
it would an unseen one at serving. Per user (>= `MIN_HISTORY` ratings before the cut): the base's top K of the
catalogue, the CTR logit and the base's score of each, and the held-out movie's index (-1 when the base missed it).

Kept as `<work dir>/clickprompt/<data key>/fusion/<checkpoint version>-<base key>.json`: a weight is never read
for another checkpoint, data folder or base. Without one the ranker serves its base's order.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ...config import ConfigError, Settings
from ...datafolder import MIN_HISTORY, cut_folder, data_key, leave_last_out, read_data_folder
from ...domain import UserContext, UserRating
from ...schema import COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER
from ..base import MakeBase, Ranker, base_key
from ..fusion import Calibration, choose_weight
from ..pretrained import read_json
from .checkpoint import (CHECKPOINTS_DIR, TRAINING_FILE, checkpoint_version, default_checkpoint, prepare_clickprompt,
                         serving_problem)
from .score import ClickPromptScorer

__all__ = ["prepare", "calibrate", "fusion_path", "load_calibration", "logits"]

log = logging.getLogger(__name__)



def logits(probs: np.ndarray) -> np.ndarray:
    """The CTR model's score as the fusion reads it: its logit (a probability's scale saturates near 0 and 1)."""
    return np.log(np.clip(probs, 1e-12, None)) - np.log(np.clip(1.0 - probs, 1e-12, None))


def fusion_path(settings: Settings, checkpoint: Path, base: str) -> Path:
    return (settings.host.work_dir / CHECKPOINTS_DIR / data_key(settings.host.data_webroot) / "fusion"
            / f"{checkpoint_version(checkpoint)}-{base}.json")


def load_calibration(settings: Settings, checkpoint: Path, base: Ranker | None) -> Calibration | None:
    path = fusion_path(settings, checkpoint, base_key(base))
    if not path.is_file():
        return None
    try:
        return Calibration.from_json(read_json(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a fusion weight file ({type(exc).__name__}: {exc}); delete it to choose "
                          "the weight again") from None


def _rows(settings: Settings, checkpoint: Path, base: Ranker, k: int):
    """Validation rows: (CTR logits over the base's top k, the base's scores of them, the held-out movie's index)."""
    ratings, movies = read_data_folder(settings.host.data_webroot)
    reduced, holdouts = leave_last_out(ratings)
    catalogue = tuple(int(m) for m in movies[COL_MOVIE].drop_duplicates())
    histories = {int(u): rows.sort_values([COL_TIMESTAMP, COL_MOVIE], kind="stable")
                 for u, rows in reduced.groupby(COL_USER)}
    users = sorted(u for u, h in holdouts.items() if h.history_size >= MIN_HISTORY and u in histories)
    contexts = [UserContext(u, tuple(UserRating(int(m), float(r), int(t)) for m, r, t in histories[u][
        [COL_MOVIE, COL_RATING, COL_TIMESTAMP]].itertuples(index=False)), catalogue, {}) for u in users]
    windows = []
    for ctx, ranking in zip(contexts, base.rank_many(contexts)):
        top = list(ranking.items[:k]) if ranking is not None else []
        windows.append(([i.movie_id for i in top], [i.score for i in top]))
    scorer = ClickPromptScorer(checkpoint)
    asked = [i for i, (ids, _) in enumerate(windows) if ids]
    probs = scorer.score_many([(users[i], histories[users[i]], windows[i][0]) for i in asked], movies)
    targets = [holdouts[users[i]].movie_id for i in asked]
    return ([logits(p) for p in probs], [np.asarray(windows[i][1]) for i in asked],
            [windows[i][0].index(t) if t in windows[i][0] else -1 for i, t in zip(asked, targets)])


def calibrate(settings: Settings, checkpoint: Path, make_base: MakeBase) -> Calibration | None:
    """The weight over the configured base (chosen now and kept, or the kept one); None without a base (the
    host's candidates: the ranker's `ORDER_WEIGHT`)."""
    serving_base = make_base(settings)
    if serving_base is None:
        return None
    try:
        path = fusion_path(settings, checkpoint, base_key(serving_base))
        kept = load_calibration(settings, checkpoint, serving_base)
    finally:
        serving_base.close()
    if kept is not None:
        return kept
    webroot = settings.host.data_webroot
    _, holdouts = leave_last_out(read_data_folder(webroot)[0])
    folder = cut_folder(webroot, settings.host.work_dir / CHECKPOINTS_DIR / data_key(webroot) / "base-data",
                        {u: h.timestamp for u, h in holdouts.items()})
    base = make_base(settings.replace(host={"data_dir": folder}))
    try:
        calibration = choose_weight(*_rows(settings, checkpoint, base, settings.base_k), seed=settings.seed)
    finally:
        base.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".fusion-", delete=False) as tmp:
        json.dump(calibration.to_json(), tmp, indent=2)
    os.replace(tmp.name, path)
    log.info("clickprompt: fusion weight %g over %s kept in %s", calibration.weight, settings.base, path)
    return calibration


def prepare(settings: Settings, progress: bool, make_base: MakeBase, *, quick: bool = True) -> str:
    """The checkpoint for the data folder (trained now, or reused) and its fusion weight over the base; one line."""
    started = time.perf_counter()
    existed = serving_problem(default_checkpoint(settings, quick=quick), settings) is None
    path = prepare_clickprompt(settings, quick=quick, progress=progress)
    if existed:
        line = f"clickprompt: reusing {path}"
    else:
        info = read_json(path / TRAINING_FILE)
        line = (f"clickprompt: trained {path} on {info['train_samples']} samples in {time.perf_counter() - started:.0f} s "
                f"(validation: NDCG@10 {info['valid_ndcg']:.4f} over {info['valid_users']} users, AUC {info['valid_auc']:.4f})")
    calibration = calibrate(settings, path, make_base)
    if calibration is None:
        return line + "; no base: fused with the host's order"
    gain = "" if calibration.gain is None else (
        f", best weight above 0 gains {calibration.gain[0]:+.4f} [{calibration.gain[1]:+.4f}, {calibration.gain[2]:+.4f}]")
    return (f"{line}; fusion weight {calibration.weight:g} over {settings.base} on {calibration.samples} validation "
            f"users (NDCG@10 base {calibration.base_ndcg:.4f}, CTR model {calibration.reranker_ndcg:.4f}{gain})")
