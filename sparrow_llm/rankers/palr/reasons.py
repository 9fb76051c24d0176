"""True reasons: a reason that names a genre or a title is checked against the data before it is stored.

A reason is true when every genre it names is one of the candidate's genres, every movie it names (a
"like X" phrase, or any known title of two or more words) is one the user rated, a "like X" movie is one the
user liked, and a named genre is also a genre of the liked movie it is paired with ("Comedy, like
Schindler's List" names a title that lacks that genre). A false reason is replaced by `data_reason`, which is
true by construction; a reason that names neither is kept as the model wrote it.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from ...domain import MovieMeta, Rated, spoken_title
from ...schema import LIKED_RATING

__all__ = ["data_reason", "ReasonChecker", "named_genres", "GENRE_WORDS"]

# movies.csv's genres and the other words a reason uses for them ("animated", "sci fi").
GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "Action": ("action",), "Adventure": ("adventure", "adventures"), "Animation": ("animation", "animated"),
    "Children": ("children", "children's", "kids"), "Comedy": ("comedy", "comedies", "comedic"),
    "Crime": ("crime",), "Documentary": ("documentary", "documentaries"), "Drama": ("drama", "dramas"),
    "Fantasy": ("fantasy",), "Film-Noir": ("film-noir", "film noir", "noir"), "Horror": ("horror",),
    "IMAX": ("imax",), "Musical": ("musical", "musicals"), "Mystery": ("mystery", "mysteries"),
    "Romance": ("romance", "romantic"), "Sci-Fi": ("sci-fi", "sci fi", "scifi", "science fiction"),
    "Thriller": ("thriller", "thrillers"), "War": ("war",), "Western": ("western", "westerns"),
}
_GENRE_RE = {genre: re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(w) for w in words) + r")(?![\w-])", re.IGNORECASE)
             for genre, words in GENRE_WORDS.items()}
_LIKE = re.compile(r"\b(?:like|as in|fans? of)\s+(.+?)\s*(?:[.;!]|,\s|$)", re.IGNORECASE)
_YEAR = re.compile(r"\s*\(\d{4}\)")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", _YEAR.sub("", text).casefold()).split())


_ARTICLE = re.compile(r"^(?:the|a|an) ")


def _names(movie: MovieMeta) -> set[str]:
    """How a reason may write the movie: the title as stored, spoken (`The Godfather`) or without its article."""
    spoken = _norm(spoken_title(movie))
    return {n for n in (_norm(movie.title), spoken, _ARTICLE.sub("", spoken)) if n}


def named_genres(text: str) -> set[str]:
    return {genre for genre, pattern in _GENRE_RE.items() if pattern.search(text)}


def _liked(history: Sequence[Rated]) -> list[Rated]:
    return [r for r in history if r.rating >= LIKED_RATING]


def data_reason(movie: MovieMeta, history: Sequence[Rated]) -> str:
    """`Crime, like Heat`: the candidate's genre the user's liked movies share most, and the most recent liked
    movie with it; `like Heat` without a shared genre count; "" when no liked movie shares a genre."""
    liked = _liked(history)
    counts = {g: sum(g in r.movie.genres for r in liked) for g in movie.genres}
    shared = [g for g in sorted(counts, key=lambda g: -counts[g]) if counts[g]]
    if not shared:
        return ""
    genre = shared[0]
    closest = next(r.movie for r in reversed(liked) if genre in r.movie.genres)
    title = spoken_title(closest)
    return f"{genre}, like {title}" if len(f"{genre}, like {title}".split()) <= 4 else f"like {title}"


class ReasonChecker:
    """Checks one user's reasons (module docstring); the user's rated titles and the known titles are read once."""

    def __init__(self, history: Sequence[Rated], known: Iterable[MovieMeta] = ()):
        self.history = history
        self._rated = {name: r for r in history for name in _names(r.movie)}
        # Titles of two or more words: a one-word title ("Heat") is too often a plain word to spot in prose.
        self._titles = {name for m in known for name in _names(m) if len(name.split()) >= 2}
        self.replaced = 0

    def check(self, reason: str, movie: MovieMeta) -> str:
        """`reason` when it is true, else `data_reason(movie, history)` (counted in `replaced`)."""
        if not reason or self._true(reason, movie):
            return reason
        self.replaced += 1
        return data_reason(movie, self.history)

    def _true(self, reason: str, movie: MovieMeta) -> bool:
        text, paired = reason, []
        for match in _LIKE.finditer(reason):
            row = self._rated.get(_norm(match.group(1)))
            if row is None or row.rating < LIKED_RATING:
                return False
            paired.append(row.movie)
            text = text.replace(match.group(1), " ")
        norm = f" {_norm(text)} "
        for name in self._titles - _names(movie):
            if f" {name} " in norm:
                if name not in self._rated:
                    return False
                norm = norm.replace(f" {name} ", " ")  # a rated title's words are not genre names
        genres = named_genres(norm)
        if any(g not in movie.genres for g in genres):
            return False
        return not paired or all(any(g in m.genres for m in paired) for g in genres)
