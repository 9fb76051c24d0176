"""The learned stage's feature sets compared on validation users only (issue 17): base, `ltr`, `llm-ltr` variants.

Builds the groups once (`samples.build_groups`, every core and language-model feature, the cold-start copies with
each history cut to its last N ratings), kept as a parquet file in the work dir, then fits one LightGBM
LambdaRank model per variant and seed (`train.fit`: early stopping on the validation users' full histories) and
scores the validation groups: NDCG@10 per validation user in each segment (`full`; `hN`: the history cut to its
last N ratings, every feature and the base's window computed from those; `tail`: full histories whose target is
outside the 20% most-rated movies). Per-user NDCG is averaged over the seeds. Paired differences (95% bootstrap
intervals over users): each variant against the base, and each variant with language-model features against
the core variant trained on the same histories. Also the fusion weight `fusion.choose_weight` would serve
(full histories), the fit's seconds and the process's peak memory. The test users of the eval are never read.

    SPARROW_LLM_HOME=/tmp/x python bench/bench_ltr.py [--short 10,3] [--seeds 1,2,3] [--variants a,b]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparrow_llm.config import Settings  # noqa: E402
from sparrow_llm.datafolder import data_key, read_data_folder  # noqa: E402
from sparrow_llm.meter import measure  # noqa: E402
from sparrow_llm.metrics import bootstrap_difference, ndcg_of_scores  # noqa: E402
from sparrow_llm.rankers.fusion import choose_weight  # noqa: E402
from sparrow_llm.rankers.ltr.features import ALL_LLM_FEATURES, CORE_FEATURES, TEXT_SOURCES  # noqa: E402
from sparrow_llm.rankers.ltr.knowledge import load_texts, run_knowledge  # noqa: E402
from sparrow_llm.rankers.ltr.samples import (COL_BASE, COL_HISTORY, COL_SPLIT, COL_TARGET, COL_USER, FULL,  # noqa: E402
                                             TRAIN, VALID, LtrOptions, build_groups)
from sparrow_llm.rankers.ltr.train import fit, group_rows, target_indexes  # noqa: E402
from sparrow_llm.schema import COL_MOVIE  # noqa: E402


def _kinds(source: str, *kinds: str) -> tuple[str, ...]:
    return tuple(f"{source}_{k}" for k in kinds)


# name -> (features, the history cuts the training reads: FULL and/or the cold-start copies)
FEATURE_SETS = {
    "ltr": CORE_FEATURES,
    "llm-ltr:kn-liked": CORE_FEATURES + _kinds("knowledge", "mean_cos", "max_cos"),
    "llm-ltr:kn-all": CORE_FEATURES + _kinds("knowledge", "mean_cos", "max_cos", "disliked_cos", "rated_cos"),
    "llm-ltr:minilm-all": CORE_FEATURES + _kinds("minilm", "mean_cos", "max_cos", "disliked_cos", "rated_cos"),
    "llm-ltr:both-all": CORE_FEATURES + ALL_LLM_FEATURES,
}
TAIL_HEAD_SHARE = 0.2


def _groups(settings: Settings, options: LtrOptions) -> pd.DataFrame:
    key = hashlib.sha256(repr((options, CORE_FEATURES, ALL_LLM_FEATURES)).encode()).hexdigest()[:10]
    path = settings.host.work_dir / "ltr" / f"bench-{data_key(settings.host.data_webroot)}-{key}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    for source in TEXT_SOURCES:
        print(run_knowledge(settings, source=source, master="local[2]", progress=False).line(), flush=True)
    started = time.perf_counter()
    groups = build_groups(settings, options, CORE_FEATURES + ALL_LLM_FEATURES, base=settings.base,
                          texts=load_texts(settings, TEXT_SOURCES), master="local[2]", progress=False)
    print(f"groups built in {time.perf_counter() - started:.0f} s", flush=True)
    groups.to_parquet(path)
    return groups


def _segments(groups: pd.DataFrame, webroot: Path) -> dict[str, pd.DataFrame]:
    """segment -> its validation groups (one per validation user)."""
    valid = groups[groups[COL_SPLIT] == VALID]
    ratings, _ = read_data_folder(webroot)
    counts = ratings[COL_MOVIE].value_counts()
    head = set(counts.index[:max(1, int(len(counts) * TAIL_HEAD_SHARE))])
    out = {("full" if h == FULL else f"h{h}"): part for h, part in valid.groupby(COL_HISTORY, sort=True)}
    full = out["full"]
    out["tail"] = full[~full[COL_TARGET].isin(head)]
    return out


def _ndcg(part: pd.DataFrame, scores: np.ndarray | str) -> pd.Series:
    """Per validation user NDCG@10 of the order `scores` (the module's tie rule: the base's order on ties)."""
    values = ndcg_of_scores(group_rows(part, scores), target_indexes(part), 10)
    users = [int(u[0]) for u in group_rows(part, COL_USER)]
    return pd.Series(values, index=users)


def _fmt(interval) -> str:
    return f"{interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", default="10,3", help="cold-start history cuts (comma separated)")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--variants", default=",".join(FEATURE_SETS), help="feature sets to fit")
    parser.add_argument("--train", default="full,cold", help="full: train on full histories; cold: and the cuts")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    short = tuple(int(n) for n in args.short.split(",") if n)
    with measure() as build_cost:
        groups = _groups(settings, LtrOptions(seed=settings.seed, short_histories=short))
    print(f"groups: {groups['group'].nunique()} ({(groups[COL_SPLIT] == TRAIN).sum()} training rows), "
          f"{build_cost.seconds:.0f} s, peak {build_cost.peak_gib:.2f} GiB", flush=True)
    segments = _segments(groups, settings.host.data_webroot)
    results: dict[str, dict[str, pd.Series]] = {"base": {s: _ndcg(p, COL_BASE) for s, p in segments.items()}}
    notes: dict[str, str] = {}
    seeds = [int(s) for s in args.seeds.split(",")]
    for train_on in args.train.split(","):
        subset = groups if train_on == "cold" else groups[(groups[COL_SPLIT] != TRAIN) | (groups[COL_HISTORY] == FULL)]
        for variant in args.variants.split(","):
            names = list(FEATURE_SETS[variant])
            name = f"{variant}/{train_on}"
            per_seed, weights, seconds, iterations = [], [], [], []
            for seed in seeds:
                with measure() as cost:
                    model = fit(subset, names, seed)
                seconds.append(cost.seconds)
                iterations.append(model.best_iteration_)
                scored = {s: _ndcg(p, model.predict(p[names])) for s, p in segments.items()}
                per_seed.append(scored)
                full = segments["full"]
                weights.append(choose_weight(group_rows(full, model.predict(full[names])), group_rows(full, COL_BASE),
                                             target_indexes(full), seed=seed).weight)
            results[name] = {s: sum(r[s] for r in per_seed) / len(per_seed) for s in segments}
            notes[name] = (f"fit {np.mean(seconds):.1f} s, best iteration {iterations}, fusion weight {weights}, "
                           f"peak {cost.peak_gib:.2f} GiB")
            print(f"{name}: {notes[name]}", flush=True)
    _report(results, notes, segments)


def _report(results: dict[str, dict[str, pd.Series]], notes: dict[str, str], segments: dict) -> None:
    print("\n| variant | segment | users | NDCG@10 | Δ vs base | Δ vs ltr (same training) |")
    print("|---|---|---|---|---|---|")
    for name, by_segment in results.items():
        reference = f"ltr/{name.split('/')[-1]}"
        for segment, values in by_segment.items():
            base = results["base"][segment].reindex(values.index)
            vs_base = "–" if name == "base" else _fmt(bootstrap_difference(values, base))
            vs_ltr = (_fmt(bootstrap_difference(values, results[reference][segment].reindex(values.index)))
                      if name.startswith("llm-ltr") and reference in results else "–")
            print(f"| {name} | {segment} | {len(values)} | {values.mean():.4f} | {vs_base} | {vs_ltr} |")
    for name, note in notes.items():
        print(f"- {name}: {note}")


if __name__ == "__main__":
    main()
