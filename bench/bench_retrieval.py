"""The retrieval rankers against the host and the baselines (issue 11), over several seeds.

Runs `sparrow-llm eval --rankers <rankers> --negatives 0 --seed S` once per seed, each in a process of its
own so that every run's peak memory starts from a fresh interpreter (the full protocol: the copy without
the hidden ratings, the stand-in host, records served through /getrecforyou), then summarises
the runs: NDCG@10 per ranker (mean over seeds, and each seed's), the paired difference against host-emb
(filtered) and against `ease` with 95% bootstrap intervals over users (the seed's own bootstrap), the ratio
of the means, and the cost rows (training seconds and peak memory of each preparation, rank and serve
ms per user). Only SASRec depends on the seed (its initialisation and batches); popularity and the EASE
models are deterministic, their intervals still move with the bootstrap seed.

    python bench/bench_retrieval.py [--seeds 1,2,3] [--rankers host-emb,popularity,ease,ease-recent,sasrec]
        [--data WEBROOT] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparrow_llm.metrics import bootstrap_mean  # noqa: E402

DEFAULT_RANKERS = "host-emb,popularity,ease,ease-recent,sasrec"
HOST_EMB = "host-emb (filtered)"
EASE = "ease"


def _per_user_ndcg(per_user: pd.DataFrame) -> pd.DataFrame:
    """users x rankers NDCG@10 from per_user.csv (the hidden movie's rank in every list)."""
    host = per_user[per_user["variant"] == "host"].copy()
    host["ndcg10"] = [0.0 if pd.isna(r) or r > 10 else 1.0 / np.log2(r + 1) for r in host["rank"]]
    return host.pivot(index="userId", columns="ranker", values="ndcg10")


def _cost_rows(report: str) -> dict[str, list[str]]:
    """The cost table's cells per ranker, from results.md (the second table of the host section)."""
    section = report.split("## Host candidates")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and "---" not in line]
    tables, current = [], []
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "ranker" and current:
            tables.append(current)
            current = []
        current.append(cells)
    tables.append(current)
    header, *body = tables[-1]
    return {cells[0]: dict(zip(header, cells)) for cells in body}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--rankers", default=DEFAULT_RANKERS)
    parser.add_argument("--data", type=Path, help="a SparrowRecsys data folder (default: the fixture)")
    parser.add_argument("--out", type=Path, default=Path("results/bench-retrieval"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the eval's children inherit it
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = ["# Retrieval rankers, leave-last-out on the host's candidates", "",
             f"`python bench/bench_retrieval.py --seeds {args.seeds} --rankers {args.rankers}`"
             + (f" `--data {args.data}`" if args.data else ""), ""]
    summary: dict[str, list[float]] = {}
    for seed in seeds:
        out = args.out / f"seed-{seed}"
        argv_eval = ["eval", "--rankers", args.rankers, "--negatives", "0", "--seed", str(seed), "--out", str(out),
                     "--no-progress"] + (["--data", str(args.data)] if args.data else [])
        if subprocess.run([sys.executable, "-m", "sparrow_llm.cli", *argv_eval]).returncode != 0:
            return 1
        ndcg = _per_user_ndcg(pd.read_csv(out / "per_user.csv"))
        costs = _cost_rows((out / "results.md").read_text())
        lines += [f"## seed {seed} ({len(ndcg)} users; {out / 'results.md'})", "",
                  "| ranker | NDCG@10 | Δ vs host-emb (filtered) | x host-emb | Δ vs ease | x ease | prep s | "
                  "prep peak GiB (+added) | rank ms/user | serve ms/user |", "|" + "---|" * 10]
        for ranker in ndcg.columns:
            if ranker.endswith("(as-is)"):
                continue
            values = ndcg[ranker].to_numpy()
            summary.setdefault(ranker, []).append(float(values.mean()))
            cells = [ranker, str(bootstrap_mean(values, seed=seed))]
            for other in (HOST_EMB, EASE):
                if other in ndcg and other != ranker:
                    cells += [str(bootstrap_mean(values - ndcg[other].to_numpy(), seed=seed)),
                              f"{values.mean() / ndcg[other].mean():.2f}"]
                else:
                    cells += ["–", "–"]
            cost = costs.get(ranker, {})
            cells += [cost.get("prep s", "–"), cost.get("prep peak GiB (+added)", "–"), cost.get("rank ms/user", "–"),
                      cost.get("serve ms/user", "–")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## NDCG@10 over seeds", "", "| ranker | mean | std | per seed |", "|---|---|---|---|"]
    lines += [f"| {r} | {np.mean(v):.4f} | {np.std(v):.4f} | {', '.join(f'{x:.4f}' for x in v)} |"
              for r, v in summary.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
