"""The `llm` model's offline work over a data folder: its preparation step (the registry's), fine-tuning and
calibration, each over the base it reranks when serving (`make_base`, which the registry passes in).

A chat backend ranks with the profile in its prompt: its preparation is profiles for every user
(`profiles.run_profiles`). The local model ranks by label scores with the choose prompt, which shows no
profile: its preparation is its fusion weight, chosen on the data folder's validation users
(`finetune.calibrate_zero_shot`, a few minutes, kept per data folder and base), unless the data folder has a
fine-tuned adapter for that base (whose weight `llm finetune` chose) or `SPARROW_LLM_FUSION_WEIGHT` is set.
Its profiles (`sparrow-llm profiles`) are for the comparison page only, so the demo and the evaluation skip them.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from ...config import Settings
from ..llm.base import make_backend
from ..llm.local_lm import LocalLMBackend
from .checkpoint import serving_model
from ..base import MakeBase
from .finetune import FinetuneOptions, _serving_base_key, calibrate_zero_shot, finetune
from .profiles import run_profiles
from .prompts import Prompts

__all__ = ["prepare", "prepare_profiles", "run_finetune", "run_calibrate"]


def run_calibrate(settings: Settings, make_base: MakeBase, *, progress: bool = True, master: str = "local[*]") -> str:
    """The zero-shot local model's fusion weight for the data folder and base (chosen now, or the kept one)."""
    calibration, directory = calibrate_zero_shot(settings, make_base, progress=progress, master=master)
    gain = "" if calibration.gain is None else (
        f"; gain of weight {max((w for w in calibration.table if w > 0), key=calibration.table.get):g} over the base "
        f"{calibration.gain[0]:+.3f} [{calibration.gain[1]:+.3f}, {calibration.gain[2]:+.3f}]")
    return (f"llm: zero-shot fusion weight {calibration.weight:g} on {calibration.samples} validation users "
            f"(NDCG@10 within the first {settings.llm.verbalizer_k}: base {calibration.base_ndcg:.3f}, LLM "
            f"{calibration.reranker_ndcg:.3f}, fused {calibration.table[calibration.weight]:.3f}{gain}), kept in {directory}")


def run_finetune(settings: Settings, make_base: MakeBase, overrides: Mapping[str, Any] | None = None, *,
                 progress: bool = True, master: str = "local[*]") -> str:
    """`sparrow-llm llm finetune`: `FinetuneOptions` with `overrides`, the seed of the settings."""
    options = dataclasses.replace(FinetuneOptions(seed=settings.seed, progress=progress), **(overrides or {}))
    info = finetune(settings, make_base, options, master=master)
    tuned = info["finetuned"]
    by_weight = tuned["ndcg_by_weight"]
    return (f"llm finetune: {info['steps']} steps on {info['train_samples']} samples (candidates: "
            f"{info['base']}), stopped by {info['stopped']}, best step {info['best_step']}, "
            f"{info['wall_s'] / 60:.1f} min, peak {info['peak_rss_gib']:.2f} GiB; validation NDCG@10 within the first "
            f"{settings.llm.verbalizer_k} on {tuned['samples']} users: base {by_weight['0.0']:.3f}, fine-tuned "
            f"{by_weight['1.0']:.3f}, fused {by_weight[str(tuned['weight'])]:.3f} at weight {tuned['weight']:g}")


def prepare(settings: Settings, progress: bool, make_base: MakeBase) -> str:
    """The registry's preparation step of `llm`."""
    llm = make_backend(settings.llm)
    try:
        prompts = Prompts.from_settings(settings.llm)
        if not isinstance(llm, LocalLMBackend) or prompts.uses_profile("choose"):
            return run_profiles(settings, progress=progress).line()
        serving = serving_model(settings, llm, prompts, _serving_base_key(settings, make_base), warn=False)
        if serving.calibrated or settings.llm.fusion_weight is not None:
            return (f"llm ({serving.llm.name}): {serving.variant} model, fusion weight {serving.weight:g} "
                    f"({'chosen on validation users' if serving.calibrated else 'configured'})")
        return run_calibrate(settings, make_base, progress=progress)
    finally:
        llm.close()


def prepare_profiles(settings: Settings, progress: bool, users: Sequence[int] | None = None) -> str:
    """The registry's profile step of `llm`: the profiles of `users` (None: every user) whose history changed,
    in one Spark partition on this machine (one copy of the local model, batching `local_batch` users, on every
    core: Spark would give its Python worker one torch thread)."""
    llm = make_backend(settings.llm)
    try:
        if isinstance(llm, LocalLMBackend):  # kept loaded for the ranking after it; a bad file is one line here,
            llm.loaded()                     # not an exception in Spark's worker
    finally:
        llm.close()
    if settings.llm.local_threads is None:
        settings = settings.replace(llm={"local_threads": os.cpu_count() or 1})
    return run_profiles(settings, users=users, master="local[1]", partitions=1, progress=progress).line()
