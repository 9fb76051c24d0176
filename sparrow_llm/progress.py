"""Progress bars: a live bar on a terminal, a plain line every half minute in a log file.

tqdm redraws its bar with carriage returns; written to a file or a pipe that is thousands of frames
on one line. Off a terminal the same bar is printed as whole lines, at most one per `LOG_INTERVAL_S`
whatever asks for a redraw (tqdm's `update` holds `mininterval`, but `set_postfix`, `set_description`,
an explicit `refresh` and tqdm's monitor thread redraw at once), then one last line when the bar closes (unless
the line before already says where it ended).
"""
from __future__ import annotations

import sys
import time
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


class _LogBar(tqdm):
    """A bar for a log file: every redraw but the closing one waits until `LOG_INTERVAL_S` has passed since
    the bar started or last printed (so a job shorter than that prints only its last line)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._printed_at = time.monotonic()  # before tqdm's first draw, which this holds back
        self._printed_n: float | None = None
        super().__init__(*args, **kwargs)

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> None:
        now = time.monotonic()
        if now - self._printed_at < LOG_INTERVAL_S:
            return
        self._printed_at, self._printed_n = now, self.n
        super().refresh(nolock=nolock, lock_args=lock_args)

    def close(self) -> None:
        if self._printed_n == self.n:  # the last line already says where it ended
            self.leave = False
        super().close()


def progress_bar(*, enabled: bool = True, stream: TextIO | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (`desc`, `total`, `unit`, ...), disabled when not `enabled`."""
    stream = stream or sys.stderr
    if enabled and not stream.isatty():
        kwargs = {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S, "ncols": 100, **kwargs}
        return _LogBar(disable=False, file=_Lines(stream), **kwargs)
    return tqdm(disable=not enabled, file=stream, **kwargs)
