"""Progress bars: a live bar on a terminal, a plain line every half minute in a log file.

tqdm redraws its bar with carriage returns; written to a file or a pipe that is thousands of frames
on one line. Off a terminal the same bar is printed as whole lines, at most one per `LOG_INTERVAL_S`.
"""
from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["progress_bar", "LOG_INTERVAL_S"]

LOG_INTERVAL_S = 30.0


class _Lines:
    """A stream for tqdm that turns each redraw into one line."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self._stream.write(text + "\n")

    def flush(self) -> None:
        self._stream.flush()


def progress_bar(*, enabled: bool = True, stream: TextIO | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (`desc`, `total`, `unit`, ...), disabled when not `enabled`."""
    stream = stream or sys.stderr
    if enabled and not stream.isatty():
        kwargs = {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S, "ncols": 100, **kwargs}
        stream = _Lines(stream)
    return tqdm(disable=not enabled, file=stream, **kwargs)
