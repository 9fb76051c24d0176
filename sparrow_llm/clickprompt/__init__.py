"""ClickPrompt (Lin et al., WWW 2024, arXiv 2310.09234) for the SparrowRecsys host, in PyTorch.

ClickPrompt joins a CTR model, which reads a sample's ids and statistics, and a pretrained language
model (PLM, here all-MiniLM-L6-v2: 6 BERT layers, 384 wide, 12 heads), which reads the same sample
as text. The CTR model's last hidden vector goes through a prompt generator that makes `num_prompt`
prefix keys/values for every PLM layer ("soft prompts", as in prefix tuning), so the PLM's reading of
the text is conditioned on what the CTR model saw.

Pipeline, one module per concern:
  samples   ratings + movies -> CTR samples in the host's trainingSamples.csv columns, every feature
            from strictly earlier ratings (no leakage); a time split; a reader of the host's files.
  features  vocabularies and quantile buckets fitted on train (index 0 = unknown/missing, so unknown
            users and movies encode), the sample as text, tokenized batches.
  model     `ClickPromptConfig`; CTR backbones (DCNv2, DeepFM) in `BACKBONES`; `PromptGenerator`;
            the PLM with prefixes through a `transformers.DynamicCache` (see model.py's docstring);
            `MLMHead`; `ClickPrompt` with forward/loss/predict/mlm_loss and safetensors checkpoints.
  metrics   AUC (tie-aware) and log loss.
  train     `prepare_data` / `prepare_split`, `pretrain` (PA-MLM), `finetune` (early stopping on validation
            AUC), `evaluate`, `evaluate_table`, `train_table`, `run_experiment`.
  score     `ClickPromptScorer`: one user's candidates scored from the user's whole history.
  stage     the host-facing side: `ClickPromptRanker` (the `clickprompt` model), `prepare_clickprompt` (a
            small model per data folder), and the `run_*` paths of `sparrow-llm clickprompt ...`.

Fusion modes (`ClickPromptConfig.fusion`, the registry `FUSIONS`):
  ctr         the CTR model's logit alone; no PLM is built.
  plm         the PLM's pooled text -> linear; no CTR model (the PLM-only baseline).
  prefix      the PLM reads the text with the CTR model's prompts as prefix; pooled -> linear.
  prefix_add  the prefix logit plus the CTR model's own logit.

Training follows the paper: `pretrain` runs prompt-aware masked language modelling (PA-MLM): 15% of
the text's tokens are masked and predicted by the PLM from the rest of the text *and the prompts*, so
the CTR model learns to carry what the text says. Then `finetune` either keeps the PLM
(`prefix`/`prefix_add`) or keeps only the pretrained CTR model (`ctr` with `init_from`), which serves
at plain CTR cost. The PLM is frozen by default (`freeze_plm`): gradients still flow through it
to the prompts, and its weights are not copied into checkpoints.

Heavy modules (torch, transformers) load on first use of a name that needs them, so the sample
builder can be imported alone.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> defining module
_EXPORTS = {
    **dict.fromkeys(("Split", "build_samples", "time_split", "read_host_samples", "movie_catalog",
                     "movie_stats_now", "candidate_samples", "history_frame", "read_sample_splits"), "samples"),
    **dict.fromkeys(("FeatureSpace", "EncodedSamples", "encode_samples", "sample_texts", "OOV"), "features"),
    **dict.fromkeys(("ClickPromptConfig", "ClickPrompt", "Fusion", "FUSIONS", "BACKBONES", "POOLINGS",
                     "DCNv2", "DeepFM", "FieldEmbedding", "PromptGenerator", "MLMHead"), "model"),
    **dict.fromkeys(("auc", "log_loss"), "metrics"),
    **dict.fromkeys(("TrainOptions", "PreparedData", "FitResult", "Metrics", "prepare_data", "prepare_split",
                     "pretrain", "finetune", "evaluate", "evaluate_table", "train_table", "run_experiment", "set_seed",
                     "TABLE_ROWS"), "train"),
    "ClickPromptScorer": "score",
    **dict.fromkeys(("ClickPromptRanker", "default_checkpoint", "prepare_clickprompt", "serving_checkpoint",
                     "make_clickprompt_ranker", "run_prepare", "run_pretrain", "run_finetune", "run_eval",
                     "run_score"), "stage"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
