"""The local LLM's quality on the fixture, side by side, with `sparrow-llm eval` (leave-last-out, every eligible
user, 95% bootstrap intervals, the paired ΔNDCG@10 against host-emb and here against the base too):

  * the base alone (`settings.base`, ease-recent by default: the ranker whose top 20 the LLM reranks);
  * llm-zero: the zero-shot SmolLM2, its order only (fusion weight 1);
  * llm-zero-fused: the zero-shot model fused with the base at the weight chosen on validation users;
  * llm-ft: the fine-tuned model (`sparrow-llm llm finetune` on the evaluation's copy), its order only;
  * llm: the served model (fine-tuned when an adapter exists for the copy, fused at its validation weight).

The variants are registered under their own names for this run only; the two zero-shot ones share the LLM
cache of the copy's store (the same prompts, the same model), and so do the two fine-tuned ones, so each
model scores every user once. Fine-tune on the copy first (its data key is what the evaluation's copy gets):

    python -c "from pathlib import Path; from sparrow_llm.evaluation.datacopy import write_eval_copy; \\
        write_eval_copy(Path('../shared/sparrowrecsys/webroot'), Path('/tmp/evalcopy/data'), seed=2024)"
    SPARROW_LLM_DATA_DIR=/tmp/evalcopy/data sparrow-llm llm finetune
    python bench/bench_llm_quality.py --out results/llm-quality [--sample N]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from sparrow_llm.config import Settings
from sparrow_llm.evaluation.run import EvalOptions, run_eval
from sparrow_llm.rankers.palr.ranker import from_settings
from sparrow_llm.rankers.palr.tuning import prepare
from sparrow_llm.registry import PREPARE_STEPS, RERANKERS

# name -> (serve the fine-tuned adapter, fusion weight; None: the one chosen on validation users)
VARIANTS = {"llm-zero": (False, 1.0), "llm-zero-fused": (False, None), "llm-ft": (True, 1.0)}


def _variant_settings(settings: Settings, name: str) -> Settings:
    finetuned, weight = VARIANTS[name]
    return settings.replace(llm={"local_finetuned": finetuned, "fusion_weight": weight})


def _factory(name: str):
    def make(settings: Settings, store, base):
        ranker = from_settings(_variant_settings(settings, name), store, base)
        ranker.name = name
        return ranker
    return make


def _prepare(name: str):
    def run(settings: Settings, progress: bool, make_base) -> str:
        return prepare(_variant_settings(settings, name), progress, make_base)
    return run


llm_zero, llm_zero_fused, llm_ft = (_factory(n) for n in VARIANTS)
prepare_zero_fused = _prepare("llm-zero-fused")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/llm-quality"))
    ap.add_argument("--sample", type=int, help="a seeded sample of the eligible users (default: all)")
    ap.add_argument("--variants", default="llm-zero,llm-zero-fused,llm-ft,llm")
    args = ap.parse_args()
    settings = Settings.from_env()
    for name, target in (("llm-zero", "llm_zero"), ("llm-zero-fused", "llm_zero_fused"), ("llm-ft", "llm_ft")):
        RERANKERS[name] = f"bench_llm_quality:{target}"
    PREPARE_STEPS["llm-zero-fused"] = "bench_llm_quality:prepare_zero_fused"
    rankers = ("host-emb", *((settings.base,) if settings.base else ()), *args.variants.split(","))
    started = time.perf_counter()
    result = run_eval(settings, EvalOptions(out=args.out, sample=args.sample, negatives=0, rankers=rankers,
                                            command="python bench/bench_llm_quality.py " + " ".join(
                                                f"--{k} {v}" for k, v in vars(args).items() if v is not None)))
    print(f"{len(result.users)} users in {time.perf_counter() - started:.0f} s: {result.report}")
    print(result.report.read_text())


if __name__ == "__main__":
    main()
