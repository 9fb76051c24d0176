"""The learned stage's feature sets compared on validation targets only (issue 17): base, `ltr`, `llm-ltr` variants.

The data is the eval's copy of the data folder (`evaluation.datacopy.write_eval_copy`: every user's hidden
movie and what came after it removed), so no target here is an eval test target: each user's validation target
is their last liked movie of the copy. Builds the groups once (`samples.build_groups`, every core and
language-model feature, the cold-start copies with each history cut to its last N ratings; every user's last
target is a validation group), kept as a parquet file in the work dir. Cross-fitting over `--folds` folds of
users: the model of fold f (`train.fit`, early stopping on fold f's full histories) trains on every earlier
target and on the other folds' last targets, and scores fold f's validation groups, so every user is scored by
a model that never saw their validation target. NDCG@10 per user in each segment (`full`; `hN`: the history
cut to its last N ratings, every feature and the base's window computed from those; `tail`: full histories
whose target is outside the 20% most-rated movies), averaged over the seeds. Paired differences (95% bootstrap
intervals over users): each variant against the base, and each variant with language-model features against
the core variant trained on the same histories. Also the fusion weight `fusion.choose_weight` would serve on
the out-of-fold scores (full histories), the fits' seconds and the process's peak memory.

    SPARROW_LLM_HOME=/tmp/x python bench/bench_ltr.py [--short 10,3] [--seeds 1,2,3] [--variants a,b]
        [--train full,cold] [--folds 2] [--levels 3] [--params '{"num_leaves": 7}']
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparrow_llm.config import Settings  # noqa: E402
from sparrow_llm.datafolder import data_key, read_data_folder  # noqa: E402
from sparrow_llm.domain import UserContext, UserRating  # noqa: E402
from sparrow_llm.evaluation.datacopy import write_eval_copy  # noqa: E402
from sparrow_llm.meter import measure  # noqa: E402
from sparrow_llm.metrics import bootstrap_difference, ndcg_of_scores  # noqa: E402
from sparrow_llm.rankers.fusion import choose_weight  # noqa: E402
from sparrow_llm.rankers.ltr.features import (ADAPTED, ALL_LLM_FEATURES, CORE_FEATURES, LLM_FEATURES,  # noqa: E402
                                              TEXT_SOURCES)
from sparrow_llm.rankers.ltr.knowledge import load_texts, run_knowledge  # noqa: E402
from sparrow_llm.rankers.ltr.ranker import LtrRanker, from_settings  # noqa: E402
from sparrow_llm.rankers.ltr.samples import (COL_BASE, COL_GROUP, COL_HISTORY, COL_LABEL, COL_SPLIT,  # noqa: E402
                                             COL_TARGET, COL_USER, FULL, TRAIN, VALID, LtrOptions, build_groups,
                                             load_scorers, top_k)
from sparrow_llm.rankers.ltr.train import fit, group_rows, prepare, target_indexes  # noqa: E402
from sparrow_llm.schema import COL_MOVIE, COL_RATING, COL_TIMESTAMP, RATINGS_CSV  # noqa: E402


def _kinds(source: str, *kinds: str) -> tuple[str, ...]:
    return tuple(f"{source}_{k}" for k in kinds)


# name -> (features, the history cuts the training reads: FULL and/or the cold-start copies)
FEATURE_SETS = {
    "ltr": CORE_FEATURES,
    "llm-ltr:kn-liked": CORE_FEATURES + _kinds("knowledge", "mean_cos", "max_cos"),
    "llm-ltr:kn-all": CORE_FEATURES + _kinds("knowledge", "mean_cos", "max_cos", "disliked_cos", "rated_cos"),
    "llm-ltr:minilm-all": CORE_FEATURES + _kinds("minilm", "mean_cos", "max_cos", "disliked_cos", "rated_cos"),
    "llm-ltr:both-all": CORE_FEATURES + LLM_FEATURES,
    "llm-ltr:adapted": CORE_FEATURES + _kinds(ADAPTED, "mean_cos", "max_cos", "disliked_cos", "rated_cos"),
    "llm-ltr:all3": CORE_FEATURES + ALL_LLM_FEATURES,
}
TAIL_HEAD_SHARE = 0.2
EVERY_USER = 10 ** 9  # valid_users: every user's last target is a validation group (the folds split them)


def _eval_copy(settings: Settings) -> Settings:
    """The settings over the eval's copy of their data folder (written once into the work dir)."""
    dest = settings.host.work_dir / "bench-ltr-copy"
    if not (dest / RATINGS_CSV).is_file():
        write_eval_copy(settings.host.data_webroot, dest, seed=settings.seed)
    return settings.replace(host={"data_dir": dest})


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


def _folds(groups: pd.DataFrame, folds: int, seed: int) -> list[pd.DataFrame]:
    """Per fold: the groups with the other folds' validation groups turned into training groups (those whose
    target is in the window, as `build_groups` keeps them)."""
    users = sorted(groups.loc[groups[COL_SPLIT] == VALID, COL_USER].unique())
    random.Random(seed).shuffle(users)
    out = []
    for f in range(folds):
        mine = set(users[f::folds])
        part = groups.copy()
        part.loc[(part[COL_SPLIT] == VALID) & ~part[COL_USER].isin(mine), COL_SPLIT] = TRAIN
        in_window = part.groupby(COL_GROUP)[COL_LABEL].transform("max") > 0
        out.append(part[(part[COL_SPLIT] == VALID) | in_window])
    return out


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


def _serving_ms(settings: Settings, ranker: LtrRanker, users: int = 100) -> float:
    """ms per user of `LtrRanker.rank_many` (features, LightGBM's scores and reasons) at weight 1, over the data
    folder's first `users` users with the base's top K as their window, in batches of 20."""
    ratings, _ = read_data_folder(settings.host.data_webroot)
    catalogue, scorers = load_scorers(settings, progress=False)
    contexts = []
    for user, rows in list(ratings.sort_values(COL_TIMESTAMP).groupby(COL_USER))[:users]:
        history = tuple(UserRating(int(m), float(r), int(t))
                        for m, r, t in rows[[COL_MOVIE, COL_RATING, COL_TIMESTAMP]].itertuples(index=False))
        ids, scores = top_k(scorers[settings.base], catalogue, [history], ranker.window)[0]
        contexts.append(UserContext(int(user), history, tuple(ids), {m: None for m in ids}, None,
                                    dict(zip(ids, scores))))
    ranker.weight = 1.0  # the model's own order: every feature computed, as at any weight above 0
    started = time.perf_counter()
    for start in range(0, len(contexts), 20):
        ranker.rank_many(contexts[start:start + 20])
    return (time.perf_counter() - started) * 1000 / len(contexts)


def _prepare(settings: Settings) -> None:
    """The registry's preparation of `ltr` and `llm-ltr` on the copy (their validation users' numbers), and
    their serving time."""
    for llm in (False, True):
        with measure() as cost:
            line = prepare(settings, llm=llm)
        print(f"{line}; process peak {cost.peak_gib:.2f} GiB", flush=True)
        print(f"serving: {_serving_ms(settings, from_settings(settings, llm=llm)):.1f} ms/user", flush=True)


def _fmt(interval) -> str:
    return f"{interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", default="10,3", help="cold-start history cuts (comma separated)")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--variants", default=",".join(FEATURE_SETS), help="feature sets to fit")
    parser.add_argument("--train", default="full,cold", help="full: train on full histories; cold: and the cuts")
    parser.add_argument("--folds", type=int, default=2, help="cross-fitting folds of the users")
    parser.add_argument("--levels", type=int, default=LtrOptions().train_per_user, help="training targets per user")
    parser.add_argument("--params", default="{}", help="LightGBM parameters over the stage's (JSON)")
    parser.add_argument("--prepare", action="store_true",
                        help="instead: the registry's preparation of ltr and llm-ltr on the copy, and serving time")
    args = parser.parse_args(argv)
    settings = _eval_copy(Settings.from_env())
    if args.prepare:
        _prepare(settings)
        return
    short = tuple(int(n) for n in args.short.split(",") if n)
    options = LtrOptions(seed=settings.seed, short_histories=short, train_per_user=args.levels, valid_users=EVERY_USER)
    with measure() as build_cost:
        groups = _groups(settings, options)
    print(f"groups: {groups[COL_GROUP].nunique()} ({(groups[COL_SPLIT] == TRAIN).sum()} training rows), "
          f"{build_cost.seconds:.0f} s, peak {build_cost.peak_gib:.2f} GiB", flush=True)
    folds = _folds(groups, args.folds, settings.seed)
    # fold -> segment -> validation groups
    segments = [_segments(part, settings.host.data_webroot) for part in folds]
    results: dict[str, dict[str, pd.Series]] = {
        "base": {s: pd.concat([_ndcg(seg[s], COL_BASE) for seg in segments]) for s in segments[0]}}
    notes: dict[str, str] = {}
    seeds = [int(s) for s in args.seeds.split(",")]
    params = json.loads(args.params)
    for train_on in args.train.split(","):
        for variant in args.variants.split(","):
            names = list(FEATURE_SETS[variant])
            name = f"{variant}/{train_on}"
            per_seed, weights, seconds, iterations = [], [], [], []
            for seed in seeds:
                scored: dict[str, list[pd.Series]] = {s: [] for s in segments[0]}
                full_scores, full_base, full_targets = [], [], []
                for part, seg in zip(folds, segments):
                    train = part if train_on == "cold" else part[(part[COL_SPLIT] != TRAIN) | (part[COL_HISTORY] == FULL)]
                    with measure() as cost:
                        model = fit(train, names, seed, **params)
                    seconds.append(cost.seconds)
                    iterations.append(model.best_iteration_)
                    for s, p in seg.items():
                        scored[s].append(_ndcg(p, model.predict(p[names])))
                    full_scores += group_rows(seg["full"], model.predict(seg["full"][names]))
                    full_base += group_rows(seg["full"], COL_BASE)
                    full_targets += target_indexes(seg["full"])
                per_seed.append({s: pd.concat(v) for s, v in scored.items()})
                weights.append(choose_weight(full_scores, full_base, full_targets, seed=seed).weight)
            results[name] = {s: sum(r[s] for r in per_seed) / len(per_seed) for s in segments[0]}
            notes[name] = (f"fit {np.mean(seconds):.1f} s per model, best iterations {iterations}, "
                           f"fusion weight {[float(w) for w in weights]}, peak {cost.peak_gib:.2f} GiB")
            print(f"{name}: {notes[name]}", flush=True)
    _report(results, notes)


def _report(results: dict[str, dict[str, pd.Series]], notes: dict[str, str]) -> None:
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
