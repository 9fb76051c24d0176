"""The evaluation's segments: users by history length, hidden movies by popularity.

A user's history is the number of ratings before the hidden one in the copy (after `--history`, if given);
the hidden movie is in the head when it is among the 20% most rated movies of the copy (`metrics.head_movies`,
the long-tail share's head), in the tail otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..metrics import head_movies

__all__ = ["HISTORY_BANDS", "HEAD", "TAIL", "Segment", "history_band", "assign_segments", "segment_groups"]

# (the band's largest history, None: no bound; its label), in order.
HISTORY_BANDS: tuple[tuple[int | None, str], ...] = ((20, "≤ 20"), (100, "21–100"), (None, "> 100"))
HEAD, TAIL = "head", "tail"


@dataclass(frozen=True)
class Segment:
    """One evaluated user's segments."""

    history: int  # ratings before the hidden one in the copy
    history_band: str  # a label of HISTORY_BANDS
    hidden_popularity: str  # HEAD or TAIL: the hidden movie's popularity in the copy


def history_band(size: int) -> str:
    return next(label for bound, label in HISTORY_BANDS if bound is None or size <= bound)


def assign_segments(history: Mapping[int, int], targets: Mapping[int, int],
                    popularity: Mapping[int, int]) -> dict[int, Segment]:
    """user -> Segment, for the users of `targets` (user -> hidden movie); `history`: user -> ratings before the
    hidden one; `popularity`: movie -> ratings in the copy (a movie without one is in the tail)."""
    head = head_movies(popularity)
    return {u: Segment(history[u], history_band(history[u]), HEAD if movie in head else TAIL)
            for u, movie in targets.items()}


def segment_groups(segments: Mapping[int, Segment]) -> dict[str, list[int]]:
    """Each segment's label -> its users (sorted), every history band and then head and tail, empty ones included."""
    groups: dict[str, list[int]] = {f"history {label}": [] for _, label in HISTORY_BANDS}
    groups.update({f"hidden movie in the {part}": [] for part in (HEAD, TAIL)})
    for user in sorted(segments):
        groups[f"history {segments[user].history_band}"].append(user)
        groups[f"hidden movie in the {segments[user].hidden_popularity}"].append(user)
    return groups
