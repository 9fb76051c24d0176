"""The evaluation's protocol: who is evaluated, on which hidden movie (leave-last-out by time)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from .. import schema
from ..domain import UserRating

__all__ = ["EvalError", "Holdout", "EvalUser", "leave_last_out", "without", "MIN_HISTORY", "TOP_N"]

MIN_HISTORY = 5
TOP_N = 10  # the cut of coverage and long-tail share


class EvalError(RuntimeError):
    """The protocol was broken: a hidden rating reached the host (a bug, so it is not caught)."""


@dataclass(frozen=True)
class Holdout:
    user_id: int
    movie_id: int
    timestamp: int
    history_size: int  # the user's ratings left in the copy


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


def leave_last_out(ratings: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, Holdout]]:
    """The reduced ratings (source order kept) and each user's hidden rating (see the docstring)."""
    liked = ratings[ratings[schema.COL_RATING] >= schema.LIKED_RATING]
    last = (liked.sort_values([schema.COL_USER, schema.COL_TIMESTAMP, schema.COL_MOVIE])
            .groupby(schema.COL_USER).tail(1).set_index(schema.COL_USER))
    cut = ratings[schema.COL_USER].map(last[schema.COL_TIMESTAMP])  # NaN: no liked rating, all kept
    hidden = ratings[schema.COL_USER].map(last[schema.COL_MOVIE])
    keep = cut.isna() | ((ratings[schema.COL_TIMESTAMP] < cut) & (ratings[schema.COL_MOVIE] != hidden))
    reduced = ratings[keep]
    sizes = reduced.groupby(schema.COL_USER).size()
    holdouts = {int(u): Holdout(int(u), int(row[schema.COL_MOVIE]), int(row[schema.COL_TIMESTAMP]),
                                int(sizes.get(u, 0)))
                for u, row in last.iterrows()}
    return reduced, holdouts


def without(ids: Iterable[int], rated: set[int]) -> list[int]:
    return [m for m in ids if m not in rated]
