"""`sparrow-llm llm finetune`: LoRA on the local model for the data folder, and the fusion weight.

LlamaRec's recipe (arXiv 2311.02089) on the deploy's own ratings: the choose prompt (at most `CHOICE_HISTORY`
liked movies, K lettered candidates), a cross-entropy over the K letters' logits at the answer's first token,
LoRA r=8, alpha=32 on the attention's q and v projections (peft), one epoch at most. Samples come from
`samples.build_samples` (Spark, by time, candidates from the base). Every `eval_every` steps `check_valid`
validation samples (those whose target is among the base's first K, as served) are scored; the best adapter
is kept, and training stops after `patience` checks without a better NDCG@10, at `max_steps` or after
`max_minutes`. The kept adapter then scores every validation sample once, and its fusion weight is chosen.

Kept under `<models dir>/palr/<model hash>-<data key>-<prompt version>-k<K>-<base>/` (`checkpoint.py`), so an
adapter never serves other data, another model or another base: `adapter/` (peft's files), `fusion-finetuned.json`, and
`training.json` (what ran, how long, peak memory). `calibrate_zero_shot` writes `fusion-zero-shot.json`:
the zero-shot model's weight on the same validation samples (the model's preparation step: no training).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...config import ConfigError, Settings
from ...datafolder import data_key
from ...progress import progress_bar
from ...publish import staged_folder
from ...training import EarlyStopping, training_device
from ..base import MakeBase, base_key
from ..llm.base import make_backend
from ..llm.local_lm import LocalLMBackend, chat_texts, converted_model, option_logits, option_token_ids
from ..fusion import Calibration, choose_weight, window_base_scores
from .checkpoint import ADAPTER, FINETUNED, ZERO_SHOT, checkpoint_dir, load_calibration, save_calibration
from .prompts import OPTION_LABELS, Prompts
from .samples import TRAIN, VALID, ChoiceSample, SampleOptions, build_samples

__all__ = ["FinetuneOptions", "finetune", "calibrate_zero_shot"]

log = logging.getLogger(__name__)

_TRAINING = "training.json"


def _serving_base_key(settings: Settings, make_base: MakeBase) -> str:
    """`base_key` of the base the served model reranks (built for the data folder, then closed)."""
    base = make_base(settings)
    try:
        return base_key(base)
    finally:
        if base is not None:
            base.close()


@dataclass(frozen=True)
class FinetuneOptions:
    max_minutes: float = 40.0  # training and its checks; the final validation pass comes on top
    max_steps: int | None = None
    batch_size: int = 2  # 4 peaked at 5.6 GiB (activations of 30 layers for the backward pass)
    lr: float = 1e-3  # better than 2e-4 on validation (NDCG@10 0.300 against 0.244 after ~130 steps)
    warmup_steps: int = 10
    eval_every: int = 100
    patience: int = 2
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    samples: SampleOptions = SampleOptions()
    max_train: int | None = None  # training samples used (None: all)
    max_valid: int | None = None  # validation samples (None: all with the target among the K)
    check_valid: int | None = 100  # of those, scored at each early-stopping check (None: all); all at the end
    seed: int = 2024
    progress: bool = True


def _local(settings: Settings) -> LocalLMBackend:
    llm = make_backend(settings.llm)
    if not isinstance(llm, LocalLMBackend):
        llm.close()
        raise ConfigError(f"fine-tuning needs the local backend (SPARROW_LLM_BACKEND=local), not {settings.llm.backend!r}")
    return llm


def _requests(prompts: Prompts, samples: Sequence[ChoiceSample]):
    return [prompts.choose_request(s.history, s.candidates) for s in samples]


def _score(model, tokenizer, prompts: Prompts, samples: Sequence[ChoiceSample], batch: int, bar=None) -> list[np.ndarray]:
    """The K options' logits of each sample, in the host's order of its candidates (`bar` counts the samples)."""
    import torch

    rows: list[np.ndarray] = []
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        requests = _requests(prompts, chunk)
        ids = option_token_ids(tokenizer, requests[0].options)
        encoded = tokenizer(chat_texts(tokenizer, requests), return_tensors="pt", padding=True, padding_side="left",
                            add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            rows.extend(option_logits(model, encoded, ids).float().cpu().numpy())
        if bar is not None:
            bar.update(len(chunk))
    return rows


def _calibrate(llm_scores: Sequence[np.ndarray], samples: Sequence[ChoiceSample]) -> Calibration:
    base = []
    for s in samples:
        ids = [m.movie_id for m in s.candidates]
        base.append(window_base_scores(ids, None if s.base_scores is None else dict(zip(ids, s.base_scores))))
    return choose_weight(llm_scores, base, [s.label for s in samples])


def _valid(samples: Sequence[ChoiceSample], k: int, limit: int | None) -> list[ChoiceSample]:
    chosen = [s for s in samples if s.split == VALID and s.target_in and len(s.candidates) == k]
    return chosen[:limit] if limit else chosen


def calibrate_zero_shot(settings: Settings, make_base: MakeBase, *, progress: bool = True,
                        master: str = "local[*]") -> tuple[Calibration, Path]:
    """The zero-shot model's fusion weight on the data folder's validation samples, candidates from the base
    (`make_base`: the ranker the served model reranks, for a data folder; None: the host's order); kept, and
    reused while the data and the base are the same."""
    llm = _local(settings)
    prompts = Prompts.from_settings(settings.llm)
    directory = checkpoint_dir(settings, llm, prompts, _serving_base_key(settings, make_base))
    found = load_calibration(directory, ZERO_SHOT)
    if found is not None:
        return found, directory
    lm = llm.loaded()  # a model that cannot load fails before minutes of samples, not after
    k = settings.llm.verbalizer_k
    valid = _valid(build_samples(settings, SampleOptions(k=k, seed=settings.seed), base_for=make_base, master=master,
                                 progress=progress), k, None)
    with lm.lock, progress_bar(total=len(valid), desc="llm calibrate", unit="user", enabled=progress) as bar:
        scores = _score(lm.model, lm.tokenizer, prompts, valid, settings.llm.local_batch, bar)
    calibration = _calibrate(scores, valid)
    save_calibration(directory, ZERO_SHOT, calibration)
    return calibration, directory


def _peft_model(folder: Path, options: FinetuneOptions):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(options.seed)
    base = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    config = LoraConfig(r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
                        target_modules=list(options.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def finetune(settings: Settings, make_base: MakeBase, options: FinetuneOptions = FinetuneOptions(), *,
             master: str = "local[*]") -> dict:
    """Trains the adapter for the data folder on candidates from the base (`make_base`, as `calibrate_zero_shot`)
    and chooses both fusion weights; returns what training.json says."""
    import torch
    from transformers import AutoTokenizer

    started = time.perf_counter()
    llm = _local(settings)
    prompts = Prompts.from_settings(settings.llm)
    base = _serving_base_key(settings, make_base)
    directory = checkpoint_dir(settings, llm, prompts, base)
    k = settings.llm.verbalizer_k
    if k > len(OPTION_LABELS):
        raise ConfigError(f"SPARROW_LLM_VERBALIZER_K must be <= {len(OPTION_LABELS)}, got {k}")
    samples = build_samples(settings, dataclasses.replace(options.samples, k=k, seed=options.seed), base_for=make_base,
                            master=master, progress=options.progress)
    train = [s for s in samples if s.split == TRAIN and len(s.candidates) == k]
    random.Random(options.seed).shuffle(train)
    train = train[:options.max_train] if options.max_train else train
    valid = _valid(samples, k, options.max_valid)
    if not train or not valid:
        raise ConfigError(f"too little data to fine-tune: {len(train)} training and {len(valid)} validation samples")
    folder = converted_model(llm.source, settings.llm.models_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    device = training_device()
    model = _peft_model(folder, options).to(device)
    option_ids = option_token_ids(tokenizer, OPTION_LABELS[:k])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / options.warmup_steps))

    def validate(samples: Sequence[ChoiceSample]) -> tuple[float, list[np.ndarray]]:
        model.eval()
        scores = _score(model, tokenizer, prompts, samples, options.batch_size)
        model.train()
        return _calibrate(scores, samples).reranker_ndcg, scores

    checks = valid[:options.check_valid] if options.check_valid else valid
    history: list[dict] = []
    stopping = EarlyStopping(options.patience)  # on validation NDCG@10; keeps the adapter's weights
    max_steps = options.max_steps or -(-len(train) // options.batch_size)  # one epoch, as LlamaRec
    deadline = started + options.max_minutes * 60
    step, stopped = 0, "max_steps"
    training_s = 0.0  # the steps' own time, without the validation passes: steps/s
    model.train()
    with progress_bar(total=max_steps, desc="llm finetune", unit="step", enabled=options.progress) as bar:
        while step < max_steps:
            step_started = time.perf_counter()
            chunk = train[(step * options.batch_size) % len(train):][:options.batch_size]
            encoded = tokenizer(chat_texts(tokenizer, _requests(prompts, chunk)), return_tensors="pt", padding=True,
                                padding_side="left", add_special_tokens=False).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):  # CPU: fp32
                logits = option_logits(model, encoded, option_ids)
            labels = torch.tensor([s.label for s in chunk], device=device)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            training_s += time.perf_counter() - step_started
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            out_of_time = time.perf_counter() > deadline
            if step % options.eval_every == 0 or step == max_steps or out_of_time:
                ndcg, _ = validate(checks)
                history.append({"step": step, "valid_ndcg": ndcg, "train_loss": loss.item(),
                                "elapsed_s": time.perf_counter() - started})
                if stopping.update(ndcg, step, lambda: {n: p.detach().clone() for n, p in model.named_parameters()
                                                        if p.requires_grad}):
                    stopped = "patience"
                    break
            if out_of_time:
                stopped = "max_minutes"
                break
    model.load_state_dict(stopping.state, strict=False)
    _, scores = validate(valid)  # the best adapter on every validation sample: its fusion weight
    tuned = _calibrate(scores, valid)
    info = {
        "data_folder": str(settings.host.data_webroot), "data_key": data_key(settings.host.data_webroot),
        "model": llm.model, "base": base,
        "options": {**dataclasses.asdict(options), "samples": dataclasses.asdict(options.samples)},
        "train_samples": len(train), "valid_samples": len(valid), "check_samples": len(checks), "steps": step,
        "best_step": stopping.best_step, "stopped": stopped, "history": history, "device": device.type,
        "epochs": step * options.batch_size / len(train), "steps_per_s": step / training_s if training_s else 0.0,
        "wall_s": time.perf_counter() - started,
        "peak_rss_gib": _peak_rss_gib(), "finetuned": tuned.to_json(),
    }
    _store(directory, model, info, tuned)
    return info


def _store(directory: Path, model, info: dict, tuned: Calibration) -> None:
    """The adapter published whole (`publish.staged_folder`: an older adapter is replaced, never deleted first),
    then its weight and the record."""
    with staged_folder(directory / ADAPTER) as staging:
        model.save_pretrained(staging)
    save_calibration(directory, FINETUNED, tuned)
    (directory / _TRAINING).write_text(json.dumps(info, indent=2))
    log.info("llm finetune: %s (best step %s, valid NDCG@10 %.4f)", directory, info["best_step"], tuned.reranker_ndcg)
