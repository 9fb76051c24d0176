"""The `sparrow-llm` command: parses flags into one Settings object and calls a `run_*` path.

`parser` holds the flags, `commands` the handlers; this module builds the settings, runs the handler and
turns every error into one `sparrow-llm: error: ...` line and exit 2. Only this package prints.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import Callable, Sequence

from .. import schema
from ..config import ConfigError, Settings
from .parser import build_parser

__all__ = ["main", "build_parser"]


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error already printed as one line (2)
        return int(exc.code or 0)
    args.command_line = shlex.join(["sparrow-llm", *argv])  # results.md prints it, for reruns
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_library_bars(getattr(args, "no_progress", False) or not sys.stderr.isatty())
    from ..bridge.client import BridgeError
    from ..bridge.host import HostError
    from ..rankers.llm.base import LLMError
    from ..store import StoreError

    run: Callable = args.run
    log = logging.getLogger("sparrow_llm")
    try:
        settings = _settings(args)
        if settings.store.kind == "file":
            from ..bridge.host import resolve_host
            from ..store import adopt_legacy_store

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


def _quiet_library_bars(quiet: bool) -> None:
    """Libraries' own bars (transformers' "Loading weights", its GGUF conversion, huggingface_hub's) follow
    --no-progress, and stay out of log files, where their carriage-return frames pile up on one line; ours
    (`progress.progress_bar`) set `disable` themselves. Environment variables, set before those libraries are
    imported, so Spark's Python workers (started with this environment) obey them too."""
    if not quiet:
        return
    os.environ["TQDM_DISABLE"] = "1"  # tqdm's default for bars that do not pass `disable`
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # huggingface_hub's and transformers' (read on import)
    if "transformers" in sys.modules:  # already imported (main called in-process, as the tests do)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
