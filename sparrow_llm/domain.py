"""The plain types every stage shares: movies, ratings, a user's context, rankings, records, profiles.

Imports nothing of ours but the constants in `schema`; every other module sits above it.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .schema import LIKED_RATING, MODEL_NAME_RE, PARSE_FALLBACK

__all__ = [
    "MovieMeta", "UserRating", "UserHistory", "CandidateList", "UserBundle",
    "RankedItem", "Record", "Profile", "RecordError", "UserContext", "Ranking", "served_order", "Rated", "movie_label", "movie_text",
    "spoken_title",
]


class RecordError(ValueError):
    """A record that breaks the store contract (bad model name, repeated movie)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class MovieMeta:
    movie_id: int
    title: str
    release_year: int
    genres: tuple[str, ...]
    average_rating: float
    rating_number: int
    emb: tuple[float, ...] | None = None


@dataclass(frozen=True)
class UserRating:
    movie_id: int
    rating: float
    timestamp: int


@dataclass(frozen=True)
class UserHistory:
    user_id: int
    known: bool
    ratings: tuple[UserRating, ...]  # oldest first


@dataclass(frozen=True)
class CandidateList:
    user_id: int
    known: bool
    source: str
    movies: tuple[MovieMeta, ...]


@dataclass(frozen=True)
class UserBundle:
    """What a ranker needs for one user, from one bulk call for many users."""

    user_id: int
    known: bool
    ratings: tuple[UserRating, ...]
    candidate_ids: tuple[int, ...]


@dataclass(frozen=True)
class RankedItem:
    movie_id: int
    score: float
    reason: str = ""


@dataclass(frozen=True)
class Record:
    """One ranked list for one (model, user)."""

    model: str
    user_id: int
    items: tuple[RankedItem, ...]
    backend: str
    version: str
    created_at_ms: int = field(default_factory=_now_ms)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not MODEL_NAME_RE.match(self.model):
            raise RecordError(f"model name {self.model!r} must match {MODEL_NAME_RE.pattern}")
        ids = [item.movie_id for item in self.items]
        if len(ids) != len(set(ids)):
            raise RecordError(f"record {self.model}/{self.user_id} repeats a movie id")

    @property
    def movie_ids(self) -> list[int]:
        return [item.movie_id for item in self.items]

    def to_json(self) -> str:
        return json.dumps({
            "model": self.model, "userId": self.user_id, "backend": self.backend,
            "version": self.version, "createdAt": self.created_at_ms,
            "items": [{"movieId": i.movie_id, "score": float(i.score), "reason": i.reason} for i in self.items],
            "meta": self.meta,
        }, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "Record":
        data = json.loads(text)
        return cls(
            model=data["model"], user_id=int(data["userId"]), backend=data["backend"],
            version=data["version"], created_at_ms=int(data["createdAt"]),
            items=tuple(RankedItem(int(i["movieId"]), float(i["score"]), i.get("reason") or "")
                        for i in data["items"]),
            meta=data.get("meta") or {},
        )


@dataclass(frozen=True)
class Profile:
    """A natural-language profile of one user, written offline (PALR step 1)."""

    user_id: int
    text: str
    backend: str
    version: str
    history_hash: str
    created_at_ms: int = field(default_factory=_now_ms)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps({"userId": data.pop("user_id"), "createdAt": data.pop("created_at_ms"),
                           "historyHash": data.pop("history_hash"), **data},
                          ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "Profile":
        data = json.loads(text)
        return cls(user_id=int(data["userId"]), text=data["text"], backend=data["backend"],
                   version=data["version"], history_hash=data["historyHash"],
                   created_at_ms=int(data["createdAt"]), meta=data.get("meta") or {})


@dataclass(frozen=True)
class UserContext:
    """Everything a ranker may read about one user; candidates in the host's order, or in the base ranker's."""

    user_id: int
    ratings: tuple[UserRating, ...]  # oldest first
    candidate_ids: tuple[int, ...]
    movies: Mapping[int, MovieMeta]
    profile: Profile | None = None
    # When a base ranker chose the candidates (`BaseRanker.base`): its score of each, else None.
    base_scores: Mapping[int, float] | None = None
    # ... and its reason of each ("liked by 70 people who also liked Heat"), which a reranker may reuse.
    base_reasons: Mapping[int, str] | None = None

    @property
    def rated_ids(self) -> set[int]:
        return {r.movie_id for r in self.ratings}

    def unrated_candidates(self) -> list[int]:
        """Candidates the user has not rated yet (the host recommends rated movies again)."""
        rated = self.rated_ids
        return [m for m in self.candidate_ids if m not in rated and m in self.movies]

    def recent_liked(self, n: int) -> list[UserRating]:
        """The user's n most recent ratings >= 3.5 of movies the host knows, newest first."""
        liked = [r for r in reversed(self.ratings) if r.rating >= LIKED_RATING and r.movie_id in self.movies]
        return liked[:n]


@dataclass(frozen=True)
class Ranking:
    items: tuple[RankedItem, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_fallback(self) -> bool:
        """The ranker could not rank this user (its LLM failed or answered nothing usable): the host's order."""
        return self.meta.get("parse") == PARSE_FALLBACK


def served_order(first: Iterable[int], rest: Sequence[int]) -> list[int]:
    """`first` in its order, then the rest of `rest` in its order (how the stage fills a list)."""
    head = list(dict.fromkeys(first))
    seen = set(head)
    return head + [m for m in rest if m not in seen]


@dataclass(frozen=True)
class Rated:
    """One history row: a movie the user rated."""

    movie: MovieMeta
    rating: float


def movie_label(movie: MovieMeta) -> str:
    """`Title (1999)`; the host keeps the year apart from the title."""
    return f"{movie.title} ({movie.release_year})" if movie.release_year else movie.title


def movie_text(movie: MovieMeta) -> str:
    """`Title (1999) | Genre,Genre`: how a movie appears in prompts and in the local embeddings."""
    return f"{movie_label(movie)} | {','.join(movie.genres) or '-'}"


# MovieLens moves a leading article behind the title ("Godfather, The"); people read it in front.
_TRAILING_ARTICLE = re.compile(r"^(.+), (The|A|An|Les|Le|La|L'|Il|El|Los|Las|Das|Der|Die|Un|Une)$")
_TRAILING_PARENTHESES = re.compile(r"(?:\s*\([^)]*\))+\s*$")


def spoken_title(movie: MovieMeta) -> str:
    """`The Godfather` for `Godfather, The`; alternative titles in trailing parentheses dropped."""
    title = _TRAILING_PARENTHESES.sub("", movie.title).strip() or movie.title
    match = _TRAILING_ARTICLE.match(title)
    if match:
        article, rest = match.group(2), match.group(1)
        title = f"{article}{rest}" if article.endswith("'") else f"{article} {rest}"
    return title
