"""The `sparrow-llm` command: parses flags into one Settings object and calls a `run_*` path."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import schema
from .config import ConfigError, Settings

__all__ = ["main", "build_parser"]


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
    parser.add_argument("--sample", type=int, help="a seeded random sample of this many users")


def _spark(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Spark")
    g.add_argument("--master", default="local[*]", help="Spark master (default: local[*])")
    g.add_argument("--partitions", type=int, help="partitions of the LLM work (default: Spark's parallelism)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparrow-llm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="start the host with the bridge, rank every user, serve the lists")
    p.add_argument("--model", default="recent", help="plugin model to run (default: recent)")
    p.add_argument("--check", action="store_true", help="verify the served order over HTTP, then exit")
    p.add_argument("--user", type=int, default=1, help="user shown or checked (default: 1)")
    p.add_argument("--port", type=int, help="host HTTP port (default: $PORT or 6010)")
    _common(p)
    p.set_defaults(run=_demo)

    p = sub.add_parser("rerank", help="rank the host's candidates of users and write the store")
    p.add_argument("--model", required=True, help="plugin model, e.g. recent")
    _users(p)
    p.add_argument("--spark", action="store_true", help="rank in Spark executors (candidates still come through "
                                                          "the bridge, on the driver)")
    _spark(p)
    _common(p)
    p.set_defaults(run=_rerank)

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
    p.set_defaults(run=_profiles)

    p = sub.add_parser("features", help="CTR samples in the host's schema, split by time (PySpark)")
    p.add_argument("--out", type=Path, required=True, help="output folder (train/, valid/, test/, _meta.json)")
    p.add_argument("--ratings", help="ratings.csv, any Spark URI (default: the data web root's sampledata)")
    p.add_argument("--movies", help="movies.csv, any Spark URI (default: the data web root's sampledata)")
    p.add_argument("--host-train", help="the host's trainingSamples.csv: pass it through instead of building")
    p.add_argument("--host-test", help="the host's testSamples.csv: pass it through instead of building")
    p.add_argument("--resplit", action="store_true", help="with --host-*: join and split by time")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    _spark(p)
    _common(p)
    p.set_defaults(run=_features)

    cp = sub.add_parser("clickprompt", help="ClickPrompt: train, evaluate, score").add_subparsers(
        dest="action", required=True)
    p = cp.add_parser("prepare", help="the serving checkpoint for the data folder (trained when missing, ~3 min)")
    _common(p)
    p.set_defaults(run=_cp_prepare)
    for action, helptext in (("pretrain", "PA-MLM pretraining (CTR model + prompt generator + MLM head)"),
                             ("finetune", "click fine-tuning: with the PLM, or the CTR model alone")):
        p = cp.add_parser(action, help=helptext)
        p.add_argument("--out", type=Path, required=True, help="checkpoint folder")
        p.add_argument("--samples", type=Path, help="a `sparrow-llm features` output folder (default: build in pandas)")
        p.add_argument("--epochs", type=int, default=1 if action == "pretrain" else 3)
        p.add_argument("--max-steps", type=int, help="cap the steps of each epoch")
        p.add_argument("--seed", type=int)
        p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; leave the other core to the host)")
        if action == "finetune":
            p.add_argument("--mode", choices=("ctr", "plm", "prefix", "prefix_add"), default="prefix")
            p.add_argument("--init-from", type=Path, help="a pretrain checkpoint (CTR-only after PA-MLM)")
            _validation_args(p)
        _common(p)
        p.set_defaults(run=_cp_train)
    p = cp.add_parser("eval", help="CTR-only, PLM-only, ClickPrompt with PLM, CTR-only after PA-MLM; seeds")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=_int_list, default=[1, 2, 3])
    p.add_argument("--samples", type=Path, help="a `sparrow-llm features` output folder")
    p.add_argument("--host-samples", type=Path, help="the host's testSamples.csv, split by time")
    p.add_argument("--fusion", choices=("prefix", "prefix_add"), default="prefix_add")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-steps", type=int, help="cap the steps of each epoch of the rows that read text")
    p.add_argument("--pretrain-steps", type=int, help="cap PA-MLM's one epoch (default: the whole epoch)")
    _validation_args(p)
    p.add_argument("--train-frac", type=float, help="train on this share of the train split")
    p.add_argument("--threads", type=int, default=1)
    _common(p)
    p.set_defaults(run=_cp_eval)
    p = cp.add_parser("score", help="score the host's candidates and write `clickprompt` records")
    p.add_argument("--checkpoint", type=Path, help="model folder (default: the data folder's prepared one)")
    p.add_argument("--use-plm", action="store_true", help="score with the PLM (slower; needs a prefix_add model)")
    p.add_argument("--max-candidates", type=int, help="score only the first N host candidates (PLM: ~14 ms each)")
    _users(p)
    _common(p)
    p.set_defaults(run=_cp_score)

    p = sub.add_parser("serve", help="nearline worker: rerank users the stage served without a fresh record")
    p.add_argument("--model", default="llm", help="nearline model (default: llm)")
    p.add_argument("--calls-per-hour", type=float, help="LLM call budget (default: 600)")
    _common(p)
    p.set_defaults(run=_serve)

    p = sub.add_parser("eval", help="leave-last-out evaluation of the host and every rerank stage")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", type=Path, help="a SparrowRecsys data folder (default: the fixture web root)")
    data.add_argument("--from-movielens", type=Path, metavar="DIR", help="build the data folder from MovieLens")
    _users(p)
    p.add_argument("--negatives", type=int, default=99,
                   help="sampled-negatives variant: unrated movies drawn per user (0: off; default: 99)")
    p.add_argument("--rankers", type=_name_list, help="comma list (default: host-rating, host-emb and every "
                                                     "registered plugin model)")
    p.add_argument("--seed", type=int, help="sampling and bootstrap seed (default: $SPARROW_LLM_SEED or 2024)")
    p.add_argument("--out", type=Path, help="results folder (default: results/eval-<date>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=_eval)

    bridge = sub.add_parser("bridge", help="build or run the JVM bridge").add_subparsers(dest="action", required=True)
    p = bridge.add_parser("build", help="mvn package in jvm_bridge/ (bridge jar and stand-in host)")
    p.add_argument("--with-tests", action="store_true", help="also run the JUnit tests")
    _common(p)
    p.set_defaults(run=_bridge_build)
    p = bridge.add_parser("start", help="run the host under the bridge launcher until Ctrl-C")
    p.add_argument("--port", type=int, help="host HTTP port (default: $PORT or 6010)")
    _common(p)
    p.set_defaults(run=_bridge_start)
    p = bridge.add_parser("info", help="connect to a running launcher and print what it serves")
    _common(p)
    p.set_defaults(run=_bridge_info)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    # `eval` has no store or bridge flags: it runs its own host and store over its data copy.
    store = {key: value for key, flag in (("kind", "store"), ("dir", "store_dir"), ("redis_host", "redis_host"),
                                          ("redis_port", "redis_port"))
             if (value := getattr(args, flag, None)) is not None}
    changes: dict = {"store": store} if store else {}
    if getattr(args, "connect_file", None):
        changes["bridge"] = {"connect_file": args.connect_file}
    if getattr(args, "port", None) is not None:
        changes["host"] = {"http_port": args.port}
    return settings.replace(**changes) if changes else settings


def _demo(args, settings: Settings) -> int:
    from .demo import run_demo

    return run_demo(settings, args.model, check=args.check, user_id=args.user, progress=not args.no_progress,
                    echo=print)


def _rerank(args, settings: Settings) -> int:
    if args.spark:
        from .pipeline.rerank_spark import run_rerank_spark

        summary = run_rerank_spark(settings, args.model, users=args.users, sample=args.sample, master=args.master,
                                   partitions=args.partitions, progress=not args.no_progress)
    else:
        from .pipeline.rerank import run_rerank

        summary = run_rerank(settings, args.model, users=args.users, sample=args.sample,
                             progress=not args.no_progress)
    return _finish(summary)


def _finish(summary) -> int:
    """The summary line; a run whose every LLM call failed ends with one error line and exit 2."""
    print(summary.line())
    if summary.all_llm_failed:
        print(f"sparrow-llm: error: every LLM call failed ({summary.llm_failed} users; last: {summary.last_error}); "
              f"{summary.kept} good records kept, the rest serve the host's order", file=sys.stderr)
        return 2
    return 0 if summary.failed == 0 else 1


def _profiles(args, settings: Settings) -> int:
    from .rankers.palr.profiles import run_profiles

    summary = run_profiles(settings, ratings=args.ratings, movies=args.movies, master=args.master,
                           partitions=args.partitions, users=args.users, parquet_out=args.parquet,
                           progress=not args.no_progress)
    print(summary.line())
    if summary.failed and summary.failed == summary.users - summary.skipped:
        print(f"sparrow-llm: error: every profile call failed ({summary.failed} users); stored profiles are kept",
              file=sys.stderr)
        return 2
    return 0 if summary.failed == 0 else 1


def _features(args, settings: Settings) -> int:
    from .rankers.clickprompt.samples_spark import run_features

    summary = run_features(args.out, ratings=args.ratings, movies=args.movies, webroot=settings.host.data_webroot,
                           host_train=args.host_train, host_test=args.host_test, resplit=args.resplit,
                           fmt=args.format, master=args.master)
    print(f"features: {summary.rows} -> {summary.out} in {summary.wall_s:.1f} s")
    return 0


def _validation_args(p: argparse.ArgumentParser) -> None:
    # Defaults stay in clickprompt.checkpoint (EVAL_EVERY, PATIENCE): importing it here would load torch for every command.
    p.add_argument("--eval-every", type=int, help="validate every N steps as well as at epoch ends (default 40)")
    p.add_argument("--patience", type=int, help="validations without a better AUC before stopping (default 2)")
    p.add_argument("--unfreeze-plm", action="store_true", help="fine-tune MiniLM too (rows that read text)")


def _validation(args) -> dict:
    return {k: getattr(args, k) for k in ("eval_every", "patience") if getattr(args, k) is not None}


def _cp_prepare(args, settings: Settings) -> int:
    from .rankers.clickprompt.checkpoint import prepare

    print(prepare(settings, progress=not args.no_progress))
    return 0


def _cp_train(args, settings: Settings) -> int:
    from .rankers.clickprompt.experiments import run_finetune, run_pretrain

    common = dict(samples=args.samples, epochs=args.epochs, seed=args.seed, threads=args.threads,
                  max_steps=args.max_steps, progress=not args.no_progress)
    if args.action == "pretrain":
        print(run_pretrain(settings, args.out, **common))
    else:
        print(run_finetune(settings, args.out, mode=args.mode, init_from=args.init_from,
                           unfreeze_plm=args.unfreeze_plm, **common, **_validation(args)))
    return 0


def _cp_eval(args, settings: Settings) -> int:
    from .rankers.clickprompt.experiments import run_eval

    print(run_eval(settings, args.out, seeds=args.seeds, samples=args.samples, host_samples=args.host_samples,
             fusion=args.fusion, epochs=args.epochs, max_steps=args.max_steps, pretrain_steps=args.pretrain_steps,
             unfreeze_plm=args.unfreeze_plm, train_frac=args.train_frac, **_validation(args),
             threads=args.threads, progress=not args.no_progress))
    return 0


def _cp_score(args, settings: Settings) -> int:
    from .pipeline.rerank import run_rerank
    from .rankers.clickprompt.checkpoint import serving_checkpoint
    from .rankers.clickprompt.ranker import ClickPromptRanker

    ranker = ClickPromptRanker(serving_checkpoint(settings, args.checkpoint), use_plm=args.use_plm,
                               max_candidates=args.max_candidates)
    summary = run_rerank(settings, ranker.name, users=args.users, sample=args.sample, ranker=ranker,
                         progress=not args.no_progress)
    return _finish(summary)


def _serve(args, settings: Settings) -> int:
    import signal
    import threading

    from .bridge.client import BridgeClient
    from .pipeline.nearline import run_nearline
    from .store import open_default_store

    if args.calls_per_hour is not None:
        settings = settings.replace(nearline={"calls_per_hour": args.calls_per_hour})
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"nearline worker for model={args.model}: budget {settings.nearline.calls_per_hour:.0f} LLM calls/hour; "
          "Ctrl-C to stop")
    with BridgeClient(settings.bridge) as client:
        summary = run_nearline(settings, client=client, store=open_default_store(settings), model=args.model,
                               stop=stop)
    print(summary.line())
    return 0


def _eval(args, settings: Settings) -> int:
    from .evaluation.run import EvalOptions, run_eval

    if args.seed is not None:
        settings = settings.replace(seed=args.seed)
    result = run_eval(settings, EvalOptions(
        out=args.out, data=args.data, movielens=args.from_movielens, users=tuple(args.users or ()),
        sample=args.sample, negatives=args.negatives, rankers=tuple(args.rankers or ()),
        progress=not args.no_progress, command=args.command_line))
    print(f"{len(result.users)} users in {result.wall_s:.0f} s: {result.report}, {result.chart}")
    return 0


def _bridge_build(args, settings: Settings) -> int:
    from .bridge.host import build_bridge

    build_bridge(settings, run_tests=args.with_tests)
    print(f"built {settings.host.bridge_jar} and {settings.host.standin_jar}")
    return 0


def _bridge_start(args, settings: Settings) -> int:
    from .bridge.host import HostProcess

    with HostProcess(settings) as host:
        print(f"host ({host.runtime.kind}) at {host.base_url}; gateway connect file {settings.bridge.connect_file}")
        print("Ctrl-C to stop")
        host.wait_until_interrupted()
    return 0


def _bridge_info(args, settings: Settings) -> int:
    import json

    from .bridge.client import BridgeClient

    with BridgeClient(settings.bridge) as client:
        print(json.dumps(client.info(), indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error already printed as one line (2)
        return int(exc.code or 0)
    args.command_line = shlex.join(["sparrow-llm", *argv])  # results.md prints it, for reruns
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .bridge.client import BridgeError
    from .bridge.host import HostError
    from .rankers.llm.base import LLMError
    from .store import StoreError

    run: Callable = args.run
    log = logging.getLogger("sparrow_llm")
    try:
        settings = _settings(args)
        if settings.store.kind == "file":
            from .bridge.host import resolve_host
            from .store import adopt_legacy_store

            adopt_legacy_store(resolve_host(settings).webroot / schema.LEGACY_STORE_SUBDIR, settings.store_dir)
        return run(args, settings)
    # LLMAuthError: a missing key, found before any work (its message never holds the key).
    except (ConfigError, BridgeError, HostError, StoreError, LLMError, ValueError, OSError) as exc:
        print(f"sparrow-llm: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparrow-llm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a library's own error (Spark's, say): one line here, the trace with -v
        log.debug("unexpected error", exc_info=True)
        print(f"sparrow-llm: error: {type(exc).__name__}: {_one_line(exc)} (-v logs the details)", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
