"""What the local model serves for a data folder: its fine-tuned adapter (if any) and its fusion weight.

Both are kept under `<models dir>/palr/<model hash>-<data key>-<prompt version>-k<K>-<base>/` (`finetune.py`
writes them), `<base>` the version of the base ranker served (its name and checkpoint's content key), or `host`:
an adapter or weight chosen for other data, another model, prompt version, K or base is never picked up.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ...config import ConfigError, Settings
from ...datafolder import data_key, file_hash
from ..fusion import Calibration
from ..llm.local_lm import LocalLMBackend, model_key
from ..pretrained import checkpoint_problem, read_json
from .prompts import Prompts

__all__ = ["checkpoint_dir", "load_calibration", "save_calibration", "serving_model", "Serving",
           "ADAPTER", "ADAPTER_WEIGHTS", "ZERO_SHOT", "FINETUNED"]

log = logging.getLogger(__name__)

ADAPTER = "adapter"
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"  # peft's file names
ZERO_SHOT, FINETUNED = "zero-shot", "finetuned"




def checkpoint_dir(settings: Settings, llm: LocalLMBackend, prompts: Prompts, base: str) -> Path:
    """Where the adapter and the fusion weights of this model, data folder, prompt version, K and base
    (`rankers.base.base_key`) are kept."""
    key = (f"{model_key(llm.source)}-{data_key(settings.host.data_webroot)}-{prompts.version}"
           f"-k{settings.llm.verbalizer_k}-{base}")
    return settings.llm.models_dir / "palr" / key


def load_calibration(directory: Path, variant: str) -> Calibration | None:
    """The variant's calibration, None when there is none; a torn or out-of-range file is one ConfigError naming it."""
    path = directory / f"fusion-{variant}.json"
    if not path.is_file():
        return None
    data = read_json(path)
    try:
        return Calibration.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc if not isinstance(exc, KeyError) else f'no {exc} field'}") from None


def save_calibration(directory: Path, variant: str, calibration: Calibration) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"fusion-{variant}.json").write_text(json.dumps(calibration.to_json(), indent=2))


@dataclass(frozen=True)
class Serving:
    llm: LocalLMBackend  # with the adapter merged in, when there is one
    weight: float  # the LLM's weight in the fusion
    variant: str  # ZERO_SHOT or FINETUNED
    calibrated: bool  # whether the weight was chosen on validation users (else configured, or 0: the base's order)


def serving_model(settings: Settings, llm: LocalLMBackend, prompts: Prompts, base: str, *,
                  warn: bool = True) -> Serving:
    """The adapter fine-tuned for the data folder and base (unless `local_finetuned` is off) and the fusion weight
    chosen for it on validation users; `SPARROW_LLM_FUSION_WEIGHT` overrides the weight. A missing weight is
    logged unless not `warn` (the preparation step, which chooses it next)."""
    try:
        directory = checkpoint_dir(settings, llm, prompts, base)
    except ConfigError as exc:  # no data folder to key on: the zero-shot model, unfused
        log.warning("local model without a data folder (%s): zero-shot, LLM order only", exc)
        return Serving(llm, 1.0 if settings.llm.fusion_weight is None else settings.llm.fusion_weight, ZERO_SHOT, False)
    adapter = directory / ADAPTER
    variant = FINETUNED if settings.llm.local_finetuned and (adapter / ADAPTER_WEIGHTS).exists() else ZERO_SHOT
    problem = checkpoint_problem(adapter, (ADAPTER_CONFIG, ADAPTER_WEIGHTS)) if variant == FINETUNED else None
    if problem is not None:  # a damaged adapter costs its gain, never the ranking
        log.warning("the fine-tuned adapter cannot be used (%s): serving the zero-shot model", problem)
        variant = ZERO_SHOT
    if variant == FINETUNED:
        llm = llm.with_adapter(adapter, f"lora-{file_hash(adapter / ADAPTER_WEIGHTS)[:10]}")
    calibration = load_calibration(directory, variant)
    if settings.llm.fusion_weight is not None:
        return Serving(llm, settings.llm.fusion_weight, variant, False)
    if calibration is None:
        # Never below the base: an LLM whose weight nobody chose on validation users takes no part in the order.
        if warn:
            log.warning("no fusion weight for %s (run `sparrow-llm llm calibrate` or `llm finetune`): serving the "
                        "base's order", directory)
        return Serving(llm, 0.0, variant, False)
    return Serving(llm, calibration.weight, variant, True)
