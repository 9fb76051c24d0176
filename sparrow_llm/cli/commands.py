"""One handler per subcommand: the flags in, one `run_*` path called, its summary printed, an exit code out.

Heavy modules (torch, Spark, transformers) are imported inside the handler that needs them, so a command
starts only what it uses.
"""
from __future__ import annotations

import sys

from .. import schema
from ..config import ConfigError, Settings


def demo(args, settings: Settings) -> int:
    from ..demo import run_demo

    return run_demo(settings, args.model, check=args.check, user_id=args.user, users=args.users,
                    all_users=args.all_users, progress=not args.no_progress, echo=print)


def rerank(args, settings: Settings) -> int:
    if args.spark:
        from ..pipeline.rerank_spark import run_rerank_spark

        summary = run_rerank_spark(settings, args.model, users=args.users, sample=args.sample, master=args.master,
                                   partitions=args.partitions, progress=not args.no_progress, profiles=True)
    else:
        from ..pipeline.rerank import run_rerank

        summary = run_rerank(settings, args.model, users=args.users, sample=args.sample,
                             progress=not args.no_progress, profiles=True)
    return _finish(summary)


def _finish(summary) -> int:
    """The summary lines (the profile step's, if any, then the ranking's); a run whose every LLM call failed ends
    with one error line and exit 2."""
    if summary.profiles:
        print(summary.profiles)
    print(summary.line())
    if summary.all_llm_failed:
        print(f"sparrow-llm: error: every LLM call failed ({summary.llm_failed} users; last: {summary.last_error}); "
              f"{summary.kept} good records kept, the rest serve the host's order", file=sys.stderr)
        return 2
    return 0 if summary.failed == 0 else 1


def profiles(args, settings: Settings) -> int:
    from ..rankers.palr.profiles import run_profiles

    summary = run_profiles(settings, ratings=args.ratings, movies=args.movies, master=args.master,
                           partitions=args.partitions, users=args.users, parquet_out=args.parquet,
                           progress=not args.no_progress)
    print(summary.line())
    if summary.failed and summary.failed == summary.users - summary.skipped:
        print(f"sparrow-llm: error: every profile call failed ({summary.failed} users); stored profiles are kept",
              file=sys.stderr)
        return 2
    return 0 if summary.failed == 0 else 1


def features(args, settings: Settings) -> int:
    from ..rankers.clickprompt.samples_spark import run_features

    summary = run_features(args.out, ratings=args.ratings, movies=args.movies, webroot=settings.host.data_webroot,
                           host_train=args.host_train, host_test=args.host_test, resplit=args.resplit,
                           fmt=args.format, master=args.master)
    print(f"features: {summary.rows} -> {summary.out} in {summary.wall_s:.1f} s")
    return 0



def validation(args) -> dict:
    return {k: getattr(args, k) for k in ("eval_every", "patience") if getattr(args, k) is not None}


def cp_prepare(args, settings: Settings) -> int:
    from ..rankers.clickprompt.tuning import prepare
    from ..registry import make_base

    print(prepare(settings, not args.no_progress, make_base))
    return 0


def cp_train(args, settings: Settings) -> int:
    from ..rankers.clickprompt.experiments import run_finetune, run_pretrain

    common = dict(samples=args.samples, epochs=args.epochs, seed=args.seed, threads=args.threads,
                  max_steps=args.max_steps, progress=not args.no_progress)
    if args.action == "pretrain":
        print(run_pretrain(settings, args.out, **common))
    else:
        print(run_finetune(settings, args.out, mode=args.mode, init_from=args.init_from,
                           unfreeze_plm=args.unfreeze_plm, **common, **validation(args)))
    return 0


def cp_eval(args, settings: Settings) -> int:
    from ..rankers.clickprompt.experiments import run_eval

    print(run_eval(settings, args.out, seeds=args.seeds, samples=args.samples, host_samples=args.host_samples,
             fusion=args.fusion, epochs=args.epochs, max_steps=args.max_steps, pretrain_steps=args.pretrain_steps,
             unfreeze_plm=args.unfreeze_plm, train_frac=args.train_frac, **validation(args),
             threads=args.threads, progress=not args.no_progress))
    return 0


def retrieval(args, settings: Settings) -> int:
    if args.action == "samples":
        from ..rankers.retrieval.samples_spark import run_samples

        print(run_samples(args.out, args.ratings or settings.host.data_webroot / schema.RATINGS_CSV,
                          master=args.master).line())
        return 0
    from ..rankers.retrieval.checkpoint import MODELS, prepare

    unknown = [m for m in args.models or () if m not in MODELS]
    if unknown:  # before any of the others trains for minutes
        raise ConfigError(f"unknown retrieval model {unknown[0]!r}; known: {', '.join(MODELS)}")
    for model in args.models or MODELS:
        print(prepare(settings, not args.no_progress, model=model, samples=args.samples))
    return 0


def cp_score(args, settings: Settings) -> int:
    from ..pipeline.rerank import run_rerank
    from ..registry import make_ranker

    ranker = make_ranker("clickprompt", settings, None, checkpoint=args.checkpoint, use_plm=args.use_plm,
                         max_candidates=args.max_candidates)
    summary = run_rerank(settings, ranker.name, users=args.users, sample=args.sample, ranker=ranker,
                         progress=not args.no_progress)
    return _finish(summary)


def llm(args, settings: Settings) -> int:
    from ..rankers.palr.tuning import run_calibrate, run_finetune
    from ..registry import make_base

    if args.action == "calibrate":
        print(run_calibrate(settings, make_base, progress=not args.no_progress, master=args.master))
        return 0
    flags = {k: getattr(args, k) for k in ("max_minutes", "max_steps", "batch_size", "eval_every", "lr")}
    print(run_finetune(settings, make_base, {k: v for k, v in flags.items() if v is not None},
                       progress=not args.no_progress, master=args.master))
    return 0


def serve(args, settings: Settings) -> int:
    import signal
    import threading

    from ..bridge.client import BridgeClient
    from ..pipeline.nearline import run_nearline
    from ..store import open_default_store

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


def eval(args, settings: Settings) -> int:
    from ..evaluation.run import EvalOptions, run_eval

    if args.seed is not None:
        settings = settings.replace(seed=args.seed)
    result = run_eval(settings, EvalOptions(
        out=args.out, data=args.data, movielens=args.from_movielens, users=tuple(args.users or ()),
        sample=args.sample, negatives=args.negatives, rankers=tuple(args.rankers or ()), history=args.history,
        progress=not args.no_progress, command=args.command_line))
    print(f"{len(result.users)} users in {result.wall_s:.0f} s: {result.report}, {result.chart}")
    return 0


def bridge_build(args, settings: Settings) -> int:
    from ..bridge.host import build_bridge

    build_bridge(settings, run_tests=args.with_tests)
    print(f"built {settings.host.bridge_jar} and {settings.host.standin_jar}")
    return 0


def bridge_start(args, settings: Settings) -> int:
    from ..bridge.host import HostProcess

    with HostProcess(settings) as host:
        print(f"host ({host.runtime.kind}) at {host.base_url}; gateway connect file {settings.bridge.connect_file}")
        print("Ctrl-C to stop")
        host.wait_until_interrupted()
    return 0


def bridge_info(args, settings: Settings) -> int:
    import json

    from ..bridge.client import BridgeClient

    with BridgeClient(settings.bridge) as client:
        print(json.dumps(client.info(), indent=2))
    return 0
