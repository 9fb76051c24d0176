"""ClickPrompt trained to rank (issue 11): its choices made on validation users, never on the eval's test users.

Data: the data folder's ratings cut the way `sparrow-llm eval` cuts them (each user's last liked rating hidden,
with everything from that second on): that copy is all the serving checkpoint may learn from, and it holds no
test answer. The same cut again inside the copy gives the validation users (>= 5 earlier ratings) and their
hidden movies; models train on what is left. Each user ranks the host's candidates (every movie it loads:
movies.csv lines without a comma in the title) minus what the user rated.

Rows (NDCG@10, HR@10 and coverage@10 of the loaded catalogue, over validation users):
  popularity       most rated first (ratings in the training part)
  host-emb         the host's `emb` ranking rebuilt: cosine of the movie's item2vec vector with the user's
                   (the mean vector of the rated movies); movies without a vector last
  clickprompt ...  `checkpoint.train_recipe` with each `--alphas` x `--negatives` x `--pretrain-steps`, per seed
                   on the host's candidates, fused with the host's order at each `--order-weights`
  ... on base      with `--base NAME` (a registered ranker, prepared over a data folder of the training part):
                   its top `--base-k` reranked through `pipeline.rerank.rank_contexts`, as the stage does, the
                   CTR logit fused with the base's scores at each `--base-weights`

Printed last (means over seeds): the row with the best NDCG@10, and the best among the rows whose coverage@10 is
at least host-emb's. The serving recipe (`checkpoint.Recipe`) and the ranker's weights (`ranker.BASE_WEIGHT`,
`ranker.ORDER_WEIGHT`) are the best NDCG@10 rows. Torch runs on one thread.

    python bench/bench_clickprompt_ranking.py [--alphas 0,0.5,1] [--negatives 4] [--pretrain-steps 0,60]
        [--backbones deepfm,dcnv2] [--epochs 5 --eval-every 200 --patience 3] [--seeds 1] [--order-weights 0,0.1,0.2,0.3] [--base ease-recent --base-weights 0.5,0.75,1] [--out DIR]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import host_movies
from sparrow_llm.config import Settings, StoreSettings
from sparrow_llm.datafolder import MIN_HISTORY, leave_last_out, read_data_folder
from sparrow_llm.domain import UserContext, UserRating, served_order
from sparrow_llm.metrics import coverage, hit_rate, ndcg
from sparrow_llm.evaluation.protocol import TOP_N
from sparrow_llm.pipeline.rerank import RerankSummary, rank_contexts
from sparrow_llm.rankers.base import Ranker
from sparrow_llm.rankers.clickprompt.checkpoint import RECIPES, train_recipe
from sparrow_llm.rankers.clickprompt.ranker import ClickPromptRanker
from sparrow_llm.registry import make_ranker, prepare_model
from sparrow_llm.schema import RATINGS_CSV
from sparrow_llm.store import open_store


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Settings.from_env().host.data_webroot, help="a host-layout data folder")
    ap.add_argument("--alphas", default="0,0.5,1", help="popularity exponents of the negative draw")
    ap.add_argument("--negatives", default="4", help="negatives per rating")
    ap.add_argument("--pretrain-steps", default=str(RECIPES[True].pretrain_steps), help="PA-MLM steps (0: none)")
    quick = RECIPES[True]
    ap.add_argument("--epochs", type=int, default=quick.finetune_epochs, help="fine-tuning epochs (early-stopped)")
    ap.add_argument("--eval-every", type=int, default=quick.eval_every, help="validate every N fine-tuning steps")
    ap.add_argument("--patience", type=int, default=quick.patience, help="validations without a gain before stopping")
    ap.add_argument("--backbones", default=RECIPES[True].backbone, help="CTR backbones (model.BACKBONES)")
    ap.add_argument("--seeds", default="1", help="comma list")
    ap.add_argument("--base", help="a registered ranker to fuse with (its scores over the same candidates)")
    ap.add_argument("--base-k", type=int, default=Settings.from_env().base_k, help="how many of the base's top it reranks")
    ap.add_argument("--base-weights", default="0.5,0.75,1", help="weights of the base's scores in the fusion")
    ap.add_argument("--order-weights", default="0,0.1,0.2,0.3", help="weights of the host's order in the fusion")
    ap.add_argument("--out", type=Path, help="checkpoints and results.csv (default: a temporary folder)")
    args = ap.parse_args(argv)
    for name, kind in (("alphas", float), ("negatives", int), ("pretrain_steps", int), ("seeds", int),
                       ("base_weights", float), ("order_weights", float)):
        setattr(args, name, [kind(x) for x in getattr(args, name).split(",") if x])
    args.backbones = args.backbones.split(",")
    return args


def validation_cut(data: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, int]]:
    """(the eval copy's ratings, the training part, validation user -> hidden movie)."""
    ratings, _ = read_data_folder(data)
    copy, _ = leave_last_out(ratings)
    train, holdouts = leave_last_out(copy)
    return copy, train, {u: h.movie_id for u, h in holdouts.items() if h.history_size >= MIN_HISTORY}


def contexts(train: pd.DataFrame, users: list[int], movies: dict, order: dict[int, list[int]]) -> list[UserContext]:
    """Each user's history (oldest first) and the host's candidates in the host's order (`order`)."""
    rows = train.sort_values(["userId", "timestamp", "movieId"], kind="stable")
    by_user = {u: g for u, g in rows.groupby("userId")}
    return [UserContext(u, tuple(UserRating(int(m), float(r), int(t)) for m, r, t in
                                 by_user[u][["movieId", "rating", "timestamp"]].to_numpy()), tuple(order[u]), movies)
            for u in users]


def scores(lists: dict[int, list[int]], targets: dict[int, int], catalogue: int) -> dict[str, float]:
    return {"NDCG@10": float(np.mean([ndcg(lists[u], t, TOP_N) for u, t in targets.items()])),
            "HR@10": float(np.mean([hit_rate(lists[u], t, TOP_N) for u, t in targets.items()])),
            "coverage@10": coverage([lists[u][:TOP_N] for u in targets], catalogue)}


def popularity_lists(train: pd.DataFrame, ctxs: list[UserContext]) -> dict[int, list[int]]:
    counts = train["movieId"].value_counts()
    return {c.user_id: sorted(c.unrated_candidates(), key=lambda m: -counts.get(m, 0)) for c in ctxs}


def host_emb_lists(data: Path, train: pd.DataFrame, users: list[int], movies: dict) -> dict[int, list[int]]:
    """The host's `emb` order of every loaded movie: cosine(user vector, movie vector), the user's vector the mean
    of the rated movies' (in `train`); movies without a vector last."""
    lines = (data / "modeldata" / "item2vecEmb.csv").read_text().splitlines()
    vectors = {int(k): np.array(v.split(), dtype=np.float64) for k, v in (ln.split(":", 1) for ln in lines if ":" in ln)}
    rated = train.groupby("userId")["movieId"].agg(list)
    out = {}
    for u in users:
        rows = [vectors[m] for m in rated.get(u, []) if m in vectors]
        user = np.mean(rows, axis=0) if rows else None
        cosine = {m: float(v @ user / (np.linalg.norm(v) * np.linalg.norm(user) or 1.0))
                  for m, v in vectors.items()} if user is not None else {}
        out[u] = sorted(movies, key=lambda m: -cosine.get(m, -1.0))
    return out


def base_ranker(name: str, train: pd.DataFrame, data: Path, work: Path) -> Ranker:
    """The registered ranker `name`, prepared over a data folder holding the training part."""
    folder = work / "base-data"
    shutil.copytree(data, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("posters"))
    (folder / RATINGS_CSV).chmod(0o644)
    train.to_csv(folder / RATINGS_CSV, index=False)
    settings = Settings.from_env().replace(host={"data_dir": folder, "work_dir": work / "base-work"})
    prepare_model(name, settings, progress=False)
    return make_ranker(name, settings)


def served_lists(ranker: ClickPromptRanker, ctxs: list[UserContext], base: Ranker | None, work: Path
                 ) -> dict[int, list[int]]:
    """What the stage serves each user: `rank_contexts`' record (with `base`: the reranked top `ranker.base_k`,
    then the rest of the base's ranking), then the host's order, rated movies removed."""
    store = open_store(StoreSettings(kind="file", dir=work))
    rank_contexts(ranker, ctxs, store, RerankSummary(ranker.name), base=base)
    lists = {}
    for ctx in ctxs:
        record = store.get_record(ranker.name, ctx.user_id)
        lists[ctx.user_id] = [m for m in served_order(record.movie_ids if record else [], ctx.candidate_ids)
                              if m in ctx.movies and m not in ctx.rated_ids]
    return lists


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    copy, train, targets = validation_cut(args.data)
    movies = host_movies(args.data)
    _, movies_csv = read_data_folder(args.data)
    users = sorted(targets)
    emb = host_emb_lists(args.data, train, users, movies)
    ctxs = contexts(train, users, movies, emb)
    print(f"{args.data}: {len(copy)} ratings in the eval copy, {len(train)} for training, "
          f"{len(targets)} validation users, {len(movies)} loaded movies")
    host = {c.user_id: c.unrated_candidates() for c in ctxs}
    rows = [{"model": "popularity", **scores(popularity_lists(train, ctxs), targets, len(movies))},
            {"model": "host-emb", **scores(host, targets, len(movies))}]
    tmp = tempfile.TemporaryDirectory(prefix="bench-cp-ranking-")
    out = args.out or Path(tmp.name)
    base = base_ranker(args.base, train, args.data, out) if args.base else None
    if base is not None:
        ranked = dict(zip(users, base.rank_many(ctxs)))
        lists = {u: [m for m in served_order([i.movie_id for i in r.items] if r else [], host[u]) if m in movies]
                 for u, r in ranked.items()}
        rows.append({"model": args.base, **scores(lists, targets, len(movies))})
    for row in rows:
        print(row, flush=True)
    floor = rows[1]["coverage@10"]
    grid = [(a, n, p, b) for a in args.alphas for n in args.negatives for p in args.pretrain_steps for b in args.backbones]
    for alpha, negatives, steps, backbone in grid:
        recipe = dataclasses.replace(RECIPES[True], alpha=alpha, negatives=negatives, pretrain_steps=steps,
                                     finetune_epochs=args.epochs, eval_every=args.eval_every, patience=args.patience,
                                     backbone=backbone)
        for seed in args.seeds:
            started = time.perf_counter()
            run = out / f"{backbone}-a{alpha}-n{negatives}-p{steps}-s{seed}"
            fit, info = train_recipe(train, movies_csv, recipe, run, seed=seed, progress=False)
            train_s = time.perf_counter() - started
            ranker = ClickPromptRanker(fit.checkpoint)
            label = f"clickprompt {backbone} a={alpha} n={negatives} pamlm={steps}"
            runs = [(None, w, f"{label} host order w={w}") for w in args.order_weights]
            runs += [(args.base, w, f"{label} on {args.base} top {args.base_k} w={w}") for w in args.base_weights if base]
            for upstream, weight, name in runs:
                ranker.base, ranker.base_k = upstream, args.base_k
                ranker.base_weight = ranker.order_weight = weight
                lists = served_lists(ranker, ctxs, base if upstream else None, run / f"store-{upstream}-{weight}")
                row = {"model": name, "seed": seed, **scores(lists, targets, len(movies)),
                       "valid_ndcg": info["valid_ndcg"], "best_step": info["best_step"], "train_s": train_s}
                rows.append(row)
                print(row, flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "results.csv", index=False)
    summary = table.groupby("model", sort=False)[["NDCG@10", "HR@10", "coverage@10"]].mean()
    print(summary.to_string(float_format=lambda x: f"{x:.4f}"))
    models = summary[summary.index.str.startswith("clickprompt")]
    print(f"best NDCG@10: {models['NDCG@10'].idxmax()}")
    covered = models[models["coverage@10"] >= floor]
    print(f"best NDCG@10 with coverage@10 >= host-emb's {floor:.3f}: "
          f"{covered['NDCG@10'].idxmax() if len(covered) else 'none'}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
