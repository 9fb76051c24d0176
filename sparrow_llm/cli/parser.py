"""The `sparrow-llm` command line: every subcommand, its flags and its handler in `commands`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import commands
from .. import schema
from ..rankers.clickprompt.configuration import EVAL_EVERY, FUSIONS, PATIENCE, ClickPromptConfig

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one `sparrow-llm: error: ...` line and exit 2, like every other error."""

    def error(self, message: str):
        print(f"sparrow-llm: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def _int_list(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated user ids, got {text!r}") from None
    if not ids:  # `--users ''` must not quietly mean every user
        raise argparse.ArgumentTypeError("expected at least one user id, got an empty list")
    return ids


def _at_least(minimum: int, kind: type = int):
    """An argparse type: a number of `kind` >= `minimum`, so a bad count is a usage error naming its flag
    instead of a library's message from deep inside a job."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value >= minimum:  # NaN too
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {text!r}")
        return value
    return parse


_count, _non_negative = _at_least(1), _at_least(0)


def _name_list(text: str) -> list[str]:
    return [x for x in text.replace(" ", "").split(",") if x]


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("store and bridge (override SPARROW_LLM_* variables)")
    g.add_argument("--store", choices=("file", "redis"), help="where ranked lists go (default: file)")
    g.add_argument("--store-dir", type=Path, help="file store root (default: $SPARROW_LLM_HOME/store)")
    g.add_argument("--redis-host")
    g.add_argument("--redis-port", type=int)
    g.add_argument("--connect-file", type=Path, help="the launcher's connect file (port + token)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("-v", "--verbose", action="store_true")


def _users(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=_int_list, help="comma-separated user ids (default: all users)")
    parser.add_argument("--sample", type=_count, help="a seeded random sample of this many users")


def _spark(parser: argparse.ArgumentParser, *, partitions: bool = True) -> None:
    """--master, and --partitions for the jobs that split LLM work (the others leave it to Spark)."""
    g = parser.add_argument_group("Spark")
    g.add_argument("--master", default="local[*]", help="Spark master (default: local[*])")
    if partitions:
        g.add_argument("--partitions", type=_count, help="partitions of the LLM work (default: Spark's parallelism)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparrow-llm", description="LLM rerank stages (PALR, ClickPrompt, retrieval) for a "
                                                     "SparrowRecsys deploy.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="start the host with the bridge, rank users, serve the lists")
    p.add_argument("--model", default=schema.DEMO_MODEL,
                   help=f"plugin model to run (default: {schema.DEMO_MODEL}, PALR on the local model)")
    p.add_argument("--check", action="store_true", help="verify the served order over HTTP, then exit")
    p.add_argument("--user", type=int, default=1, help="user shown or checked (default: 1)")
    p.add_argument("--port", type=int, help="host HTTP port (default: $PORT or 6010)")
    p.add_argument("--users", type=_int_list,
                   help=f"comma-separated user ids to rank (default: the first {schema.DEMO_USERS} and --user)")
    p.add_argument("--all-users", action="store_true", help="rank every user (PALR profiles each one first)")
    _common(p)
    p.set_defaults(run=commands.demo)

    p = sub.add_parser("rerank", help="rank the host's candidates of users and write the store")
    p.add_argument("--model", required=True, help="plugin model, e.g. recent")
    _users(p)
    p.add_argument("--spark", action="store_true", help="rank in Spark executors (candidates still come through "
                                                          "the bridge, on the driver)")
    _spark(p)
    _common(p)
    p.set_defaults(run=commands.rerank)

    p = sub.add_parser("profiles", help="PALR profiles of every user whose history changed, with Spark",
                       description="Writes a PALR profile per user into the store; users whose stored profile "
                                   "matches their history (and the backend and prompt version) are skipped, so a "
                                   "rerun resumes. LLM calls in flight: partitions x SPARROW_LLM_CONCURRENCY "
                                   "(the local backend: partitions x 1), while partitions <= Spark's task slots.")
    p.add_argument("--ratings", help="ratings.csv, any Spark URI (default: the data web root's sampledata)")
    p.add_argument("--movies", help="movies.csv, any Spark URI (default: the data web root's sampledata)")
    p.add_argument("--users", type=_int_list, help="comma-separated user ids (default: every user with ratings)")
    p.add_argument("--parquet", metavar="OUT", help="also write every profile to this Parquet folder")
    _spark(p)
    _common(p)
    p.set_defaults(run=commands.profiles)

    p = sub.add_parser("features", help="CTR samples in the host's schema, split by time (PySpark)")
    p.add_argument("--out", type=Path, required=True, help="output folder (train/, valid/, test/, _meta.json)")
    p.add_argument("--ratings", help="ratings.csv, any Spark URI (default: the data web root's sampledata)")
    p.add_argument("--movies", help="movies.csv, any Spark URI (default: the data web root's sampledata)")
    p.add_argument("--host-train", help="the host's trainingSamples.csv: pass it through instead of building")
    p.add_argument("--host-test", help="the host's testSamples.csv: pass it through instead of building")
    p.add_argument("--resplit", action="store_true", help="with --host-*: join and split by time")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    _spark(p, partitions=False)
    _common(p)
    p.set_defaults(run=commands.features)

    cp = sub.add_parser("clickprompt", help="ClickPrompt: train, evaluate, score").add_subparsers(
        dest="action", required=True)
    p = cp.add_parser("prepare", help="the serving checkpoint for the data folder (trained when missing, ~3 min)")
    _common(p)
    p.set_defaults(run=commands.cp_prepare)
    for action, helptext in (("pretrain", "PA-MLM pretraining (CTR model + prompt generator + MLM head)"),
                             ("finetune", "click fine-tuning: with the PLM, or the CTR model alone")):
        p = cp.add_parser(action, help=helptext)
        p.add_argument("--out", type=Path, required=True, help="checkpoint folder")
        p.add_argument("--samples", type=Path, help="a `sparrow-llm features` output folder (default: build in pandas)")
        p.add_argument("--epochs", type=_count, default=1 if action == "pretrain" else 3)
        p.add_argument("--max-steps", type=_count, help="cap the steps of each epoch")
        p.add_argument("--seed", type=int)
        p.add_argument("--threads", type=_count, default=1, help="torch threads (default 1; leave the other core to the host)")
        if action == "finetune":
            p.add_argument("--mode", choices=tuple(FUSIONS), default=ClickPromptConfig.fusion,
                           help=f"fusion mode (default {ClickPromptConfig.fusion})")
            p.add_argument("--init-from", type=Path, help="a pretrain checkpoint (CTR-only after PA-MLM)")
            validation_args(p)
        _common(p)
        p.set_defaults(run=commands.cp_train)
    p = cp.add_parser("eval", help="CTR-only, PLM-only, ClickPrompt with PLM, CTR-only after PA-MLM; seeds")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=_int_list, default=[1, 2, 3])
    p.add_argument("--samples", type=Path, help="a `sparrow-llm features` output folder")
    p.add_argument("--host-samples", type=Path, help="the host's testSamples.csv, split by time")
    p.add_argument("--fusion", choices=tuple(f for f, mode in FUSIONS.items() if mode.uses_prompts),
                   default="prefix_add", help="the ClickPrompt row's fusion mode (default prefix_add)")
    p.add_argument("--epochs", type=_count, default=3)
    p.add_argument("--max-steps", type=_count, help="cap the steps of each epoch of the rows that read text")
    p.add_argument("--pretrain-steps", type=_non_negative, help="cap PA-MLM's one epoch (default: the whole epoch)")
    validation_args(p)
    p.add_argument("--train-frac", type=float, help="train on this share of the train split")
    p.add_argument("--threads", type=_count, default=1)
    _common(p)
    p.set_defaults(run=commands.cp_eval)
    p = cp.add_parser("score", help="score the host's candidates and write `clickprompt` records")
    p.add_argument("--checkpoint", type=Path, help="model folder (default: the data folder's prepared one)")
    p.add_argument("--use-plm", action="store_true", help="score with the PLM (slower; needs a prefix_add model)")
    p.add_argument("--max-candidates", type=_count, help="score only the first N host candidates (PLM: ~14 ms each)")
    _users(p)
    _common(p)
    p.set_defaults(run=commands.cp_score)

    rt = sub.add_parser("retrieval", help="retrieval models: samples, training").add_subparsers(dest="action",
                                                                                              required=True)
    p = rt.add_parser("samples", help="each user's ratings in time order, as Parquet (PySpark)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ratings", help="ratings.csv, any Spark URI (default: the data folder's)")
    _spark(p, partitions=False)
    p = rt.add_parser("prepare", help="train the data folder's retrieval models (each when missing)")
    p.add_argument("--models", type=_name_list, help="comma list (default: all)")
    p.add_argument("--samples", type=Path, help="a `retrieval samples` folder (default: built in pandas)")
    for p in rt.choices.values():
        _common(p)
        p.set_defaults(run=commands.retrieval)

    lm = sub.add_parser("llm", help="the local model: fine-tune it, choose its fusion weight").add_subparsers(
        dest="action", required=True)
    for action, helptext in (("finetune", "LoRA on the data folder's choice samples (candidates from the base), "
                                          "early stopping on validation users, and its fusion weight"),
                             ("calibrate", "the zero-shot model's fusion weight, chosen on validation users")):
        p = lm.add_parser(action, help=helptext)
        if action == "finetune":
            for flag, kind, what in (("max-minutes", _at_least(0.1, float), "training time (default 40)"),
                                     ("max-steps", _count, "steps (default: one epoch)"),
                                     ("batch-size", _count, "samples per step (default 2)"),
                                     ("eval-every", _count, "steps between validations (default 100)"),
                                     ("lr", _at_least(1e-12, float), "AdamW's learning rate (default 1e-3)")):
                p.add_argument(f"--{flag}", type=kind, help=what)
        _spark(p, partitions=False)  # the choice samples job
        _common(p)
        p.set_defaults(run=commands.llm)

    p = sub.add_parser("serve", help="nearline worker: rerank users the stage served without a fresh record")
    p.add_argument("--model", default="llm", help="nearline model (default: llm)")
    p.add_argument("--calls-per-hour", type=float, help="LLM call budget (default: 600)")
    _common(p)
    p.set_defaults(run=commands.serve)

    p = sub.add_parser("eval", help="leave-last-out evaluation of the host and every rerank stage")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", type=Path, help="a SparrowRecsys data folder (default: the fixture web root)")
    data.add_argument("--from-movielens", type=Path, metavar="DIR", help="build the data folder from MovieLens")
    _users(p)
    p.add_argument("--negatives", type=_non_negative, default=99,
                   help="sampled-negatives variant: unrated movies drawn per user (0: off; default: 99)")
    p.add_argument("--rankers", type=_name_list, help="comma list (default: host-rating, host-emb and every "
                                                     "registered plugin model)")
    p.add_argument("--history", type=_count, metavar="N",
                   help="cold start: each evaluated user keeps only the last N ratings before the hidden one")
    p.add_argument("--seed", type=int, help="sampling and bootstrap seed (default: $SPARROW_LLM_SEED or 2024)")
    p.add_argument("--out", type=Path, help="results folder (default: results/eval-<date>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=commands.eval)

    bridge = sub.add_parser("bridge", help="build or run the JVM bridge").add_subparsers(dest="action", required=True)
    p = bridge.add_parser("build", help="mvn package in jvm_bridge/ (bridge jar and stand-in host)")
    p.add_argument("--with-tests", action="store_true", help="also run the JUnit tests")
    _common(p)
    p.set_defaults(run=commands.bridge_build)
    p = bridge.add_parser("start", help="run the host under the bridge launcher until Ctrl-C")
    p.add_argument("--port", type=int, help="host HTTP port (default: $PORT or 6010)")
    _common(p)
    p.set_defaults(run=commands.bridge_start)
    p = bridge.add_parser("info", help="connect to a running launcher and print what it serves")
    _common(p)
    p.set_defaults(run=commands.bridge_info)
    return parser


def validation_args(p: argparse.ArgumentParser) -> None:
    # Unset: the training paths' defaults, the same constants.
    p.add_argument("--eval-every", type=_count,
                   help=f"validate every N steps as well as at epoch ends (default {EVAL_EVERY})")
    p.add_argument("--patience", type=_non_negative,
                   help=f"validations without a better AUC before stopping (default {PATIENCE})")
    p.add_argument("--unfreeze-plm", action="store_true", help="fine-tune MiniLM too (rows that read text)")
