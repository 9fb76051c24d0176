"""ClickPrompt's comparison (issue 4): does the PLM, or PA-MLM pretraining alone, beat the CTR model?

Four models, the same DCNv2 backbone and the same data, each seed trained from scratch and scored on the
test split (mean ± std over seeds):

  CTR-only                             DCNv2 on the sample's ids and statistics
  PLM-only                             frozen MiniLM on the sample as text -> linear
  ClickPrompt (PLM)                    PA-MLM, then `--fusion` (prefix_add: the prefix logit + the CTR logit,
                                       or prefix) fine-tuned with MiniLM at inference
  ClickPrompt CTR-only after PA-MLM    PA-MLM, then the CTR model alone fine-tuned: CTR cost at inference

Data: the fixture's ratings -> leak-free samples (`clickprompt.samples`) split by time (70/10/20), or
`--host-samples` (the host's own sample file, e.g. sampledata/testSamples.csv, split by time the same way).
`--train-frac` keeps a seeded random fraction of the training split for every model (validation and test
stay whole). A MiniLM step (batch 64) is ~1.7 s on one thread, ~0.9 s on two; `--max-steps-per-epoch` cuts
only the text models' epochs, `--pretrain-steps` PA-MLM's one epoch. `--eval-every N` validates every N
steps as well as at each epoch's end (every model alike; on the full split a CTR model peaks inside its
first epoch), and a model stops after `--patience` validations without a better validation AUC.
Early stopping reads the validation split only; the test split is read once per model, at the end.

Measured per model: AUC, LogLoss, inference µs/sample (model time only; CTR models the best of 5 passes),
parameters, training seconds per epoch (training steps only, from each checkpoint's history.json), and
the peak memory of training: each model (and PA-MLM) trains, all seeds, in a child process of its own,
and its peak is the child's max RSS from `os.wait4` (`ru_maxrss`: the whole process, i.e. Python, torch,
MiniLM, the encoded data and training).

    python bench/bench_clickprompt.py [--seeds 1,2,3] [--train-frac 0.1] [--epochs 3] [--eval-every 40]
        [--patience 2] [--max-steps-per-epoch N] [--pretrain-steps N] [--fusion prefix_add] [--threads 1]
        [--host-samples PATH] [--out DIR]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from sparrow_llm.rankers.clickprompt.configuration import EVAL_EVERY, PATIENCE, ClickPromptConfig
from sparrow_llm.rankers.clickprompt.experiments import (
    evaluate_seeds, load_training_data, summarize, table_markdown, table_options,
)
from sparrow_llm.rankers.clickprompt.train import PRETRAIN_DIR, TABLE_ROWS, TrainOptions, pretrain, row_dir, train_table
from sparrow_llm.config import Settings
from sparrow_llm.schema import MOVIES_CSV

PRETRAIN_JOB = "PA-MLM pretraining"
JOBS = (PRETRAIN_JOB, *TABLE_ROWS)  # in order: the rows after PA-MLM start from its checkpoints
CTR_ONLY, PLM_ONLY, WITH_PLM, CTR_AFTER = TABLE_ROWS
GIB = 1024 ** 3


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3", help="comma list (default: 1,2,3)")
    ap.add_argument("--train-frac", type=float, default=0.1, help="fraction of the training split (default: 0.1)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of every model, early-stopped (default: 3)")
    ap.add_argument("--eval-every", type=int, default=EVAL_EVERY, help=f"validate every N steps too (default: {EVAL_EVERY})")
    ap.add_argument("--patience", type=int, default=PATIENCE,
                    help=f"validations without improvement before stopping (default: {PATIENCE})")
    ap.add_argument("--max-steps-per-epoch", type=int, help="cap of the text models' epochs")
    ap.add_argument("--pretrain-steps", type=int, help="cap of PA-MLM's one epoch (default: the whole epoch)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each training process (default: 1)")
    ap.add_argument("--unfreeze-plm", action="store_true",
                    help="fine-tune MiniLM itself in the PLM-only and with-PLM rows (PA-MLM keeps it frozen)")
    ap.add_argument("--plm-lr", type=float, default=TrainOptions.plm_lr, help="MiniLM's learning rate when unfrozen")
    ap.add_argument("--fusion", default="prefix_add", choices=("prefix", "prefix_add"),
                    help="ClickPrompt with the PLM (default: prefix_add)")
    ap.add_argument("--host-samples", type=Path, help="a host sample file split by time instead of the fixture's ratings")
    ap.add_argument("--out", type=Path, help="checkpoints and table.md (default: a temporary folder)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--job", choices=JOBS, help=argparse.SUPPRESS)  # a child: train one model for every seed
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    return args


def _data(args: argparse.Namespace):
    return load_training_data(Settings.from_env(), ClickPromptConfig(fusion=args.fusion),
                              host_samples=args.host_samples, train_frac=args.train_frac)


def child(args: argparse.Namespace) -> None:
    """One model (or PA-MLM) for every seed, in this process alone, so its peak memory is its own."""
    torch.set_num_threads(args.threads)
    data = _data(args)
    progress = not args.no_progress
    options, text_options, pretrain_options = table_options(
        epochs=args.epochs, eval_every=args.eval_every, patience=args.patience, max_steps=args.max_steps_per_epoch,
        pretrain_steps=args.pretrain_steps, plm_lr=args.plm_lr, progress=progress)
    for seed in args.seeds:
        config = ClickPromptConfig(fusion=args.fusion, seed=seed)
        seed_dir = args.out / f"seed-{seed}"
        if args.job == PRETRAIN_JOB:
            pretrain(config, data, seed_dir / PRETRAIN_DIR, pretrain_options)
        else:
            train_table(config.replace(freeze_plm=not args.unfreeze_plm), data, seed_dir, options,
                        text_options=text_options, rows=[args.job],
                        pretrained=seed_dir / PRETRAIN_DIR)


def run_child(job: str, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """Runs one child to its end; its peak RSS in bytes and its wall seconds."""
    argv = ["--seeds", ",".join(map(str, args.seeds)), "--train-frac", str(args.train_frac), "--epochs",
            str(args.epochs), "--patience", str(args.patience), "--fusion", args.fusion, "--threads",
            str(args.threads), "--plm-lr", str(args.plm_lr), "--out", str(out), "--job", job]
    argv += ["--unfreeze-plm"] if args.unfreeze_plm else []
    for flag, value in (("--eval-every", args.eval_every), ("--max-steps-per-epoch", args.max_steps_per_epoch),
                        ("--pretrain-steps", args.pretrain_steps)):
        argv += [flag, str(value)] if value else []
    argv += ["--host-samples", str(args.host_samples)] if args.host_samples else []
    argv += ["--no-progress"] if args.no_progress else []
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *argv])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{job} failed (exit {os.waitstatus_to_exitcode(status)})")
    return usage.ru_maxrss * 1024, time.perf_counter() - started  # Linux reports KiB


def check(name: str, ok: bool, detail: str) -> str:
    return f"{'PASS' if ok else 'MISS'}  {name}: {detail}"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.job:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-clickprompt-") as tmp:
        out = (args.out or Path(tmp)).resolve()
        started = time.perf_counter()
        peaks, walls = {}, {}
        for job in JOBS:
            peaks[job], walls[job] = run_child(job, args, out)
        torch.set_num_threads(1)
        data = _data(args)
        checkpoints = {seed: {row: out / f"seed-{seed}" / row_dir(row) for row in TABLE_ROWS} for seed in args.seeds}
        results = evaluate_seeds(checkpoints, data.split.test,
                                 pd.read_csv(Settings.from_env().host.data_webroot / MOVIES_CSV))
        summary = summarize(results)
        peak_cells = [f"{peaks[row] / GIB:.2f} GiB" for row in summary.index]
        table = table_markdown(summary, {"peak RSS (training process)": peak_cells})
        source = args.host_samples or "fixture ratings.csv -> samples"
        lines = [
            f"data: {source}; {len(data.train)} train (train-frac {args.train_frac}) / {len(data.valid)} valid / "
            f"{len(data.test)} test samples; seeds {args.seeds}; up to {args.epochs} epochs, validated every "
            f"{args.eval_every or 'epoch'} steps, patience {args.patience}, best validation AUC kept; "
            f"text epochs capped at {args.max_steps_per_epoch or 'all'} steps; PA-MLM {args.pretrain_steps or 'one epoch of'} "
            f"steps; with-PLM fusion {args.fusion}; MiniLM {'fine-tuned at lr ' + str(args.plm_lr) if args.unfreeze_plm else 'frozen'} "
            f"in the text rows; batch 64; {args.threads} torch thread(s)",
            "", table,
            f"PA-MLM: {peaks[PRETRAIN_JOB] / GIB:.2f} GiB peak RSS, {walls[PRETRAIN_JOB]:.0f} s for {len(args.seeds)} seeds "
            f"(validation included)",
            "child wall seconds (data prep + training, all seeds): "
            + ", ".join(f"{job} {walls[job]:.0f}" for job in JOBS),
            "",
        ]
        auc = summary["auc_mean"]
        cost = summary["us_per_sample_mean"]
        lines += [
            check("with-PLM AUC >= CTR-only + 0.005", auc[WITH_PLM] >= auc[CTR_ONLY] + 0.005,
                  f"{auc[WITH_PLM]:.4f} vs {auc[CTR_ONLY]:.4f} ({auc[WITH_PLM] - auc[CTR_ONLY]:+.4f})"),
            check("CTR-after-PA-MLM AUC >= CTR-only + 0.002", auc[CTR_AFTER] >= auc[CTR_ONLY] + 0.002,
                  f"{auc[CTR_AFTER]:.4f} vs {auc[CTR_ONLY]:.4f} ({auc[CTR_AFTER] - auc[CTR_ONLY]:+.4f})"),
            check("CTR-after-PA-MLM inference <= 1.2x CTR-only", cost[CTR_AFTER] <= 1.2 * cost[CTR_ONLY],
                  f"{cost[CTR_AFTER]:.1f} vs {cost[CTR_ONLY]:.1f} µs/sample ({cost[CTR_AFTER] / cost[CTR_ONLY]:.2f}x)"),
            check("peak training memory < 4 GiB", max(peaks.values()) < 4 * GIB,
                  f"max {max(peaks.values()) / GIB:.2f} GiB ({max(peaks, key=peaks.get)})"),
            f"total {time.perf_counter() - started:.0f} s",
        ]
        report = "\n".join(lines)
        print(report)
        if args.out:
            (out / "table.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
