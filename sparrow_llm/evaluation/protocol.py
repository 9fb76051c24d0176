"""The evaluation's protocol: who is evaluated, on which hidden movie (leave-last-out by time)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Iterable

import pandas as pd

# The split lives below the rankers, which validate with it.
from ..datafolder import MIN_HISTORY, Holdout, leave_last_out
from ..domain import UserRating
from ..schema import COL_MOVIE, COL_TIMESTAMP, COL_USER

__all__ = ["EvalError", "Holdout", "EvalUser", "leave_last_out", "keep_last", "without", "MIN_HISTORY", "TOP_N"]

TOP_N = 10  # the cut of coverage and long-tail share


class EvalError(RuntimeError):
    """The protocol was broken: a hidden rating reached the host (a bug, so it is not caught)."""


@dataclass(frozen=True)
class EvalUser:
    """One evaluated user, as the host over the copy sees them."""

    holdout: Holdout
    ratings: tuple[UserRating, ...]  # the bridge's history, oldest first
    candidate_ids: tuple[int, ...]  # the host's recall, in the host's (emb) order

    @property
    def user_id(self) -> int:
        return self.holdout.user_id

    @property
    def rated_ids(self) -> set[int]:
        return {r.movie_id for r in self.ratings}


def without(ids: Iterable[int], rated: set[int]) -> list[int]:
    return [m for m in ids if m not in rated]


def keep_last(ratings: pd.DataFrame, users: Collection[int], n: int) -> pd.DataFrame:
    """`ratings` with only the last `n` ratings (by timestamp, then movieId, as the hold-out orders them) of each
    of `users`; every other user's ratings, and the rows' order, as they are (the cold-start option `--history`)."""
    order = ratings.sort_values([COL_TIMESTAMP, COL_MOVIE], kind="stable")
    from_end = order.groupby(COL_USER).cumcount(ascending=False).reindex(ratings.index)
    return ratings[~ratings[COL_USER].isin(list(users)) | (from_end < n)]
