"""True reasons: a reason that names a genre or a title is checked against the data before it is stored.

A reason is true when every genre it names is one of the candidate's genres, every movie it names (a
"like X" phrase, or any known title of two or more words) is one the user rated, a "like X" movie is one the
user liked, and a named genre is also a genre of the liked movie it is paired with ("Comedy, like
Schindler's List" names a title that lacks that genre). A false reason is replaced by a data reason, which is
true by construction. A model's reason that names neither a genre nor a rated movie asserts nothing the data can
confirm ("Why I Love the Monsters"): it is replaced too.

Data reasons (`data_reasons`, most specific first): the base ranker's own reason when it is true ("liked by
70 people who also liked Heat": ease-recent's co-occurrence), a shared genre with each liked movie that has
it ("Crime, like Heat"), a recently liked movie that shares a genre ("you recently liked Heat"), a liked
movie of the same decade ("1990s, like Heat"), and how the movie is rated here. `ListReasons` gives a list's
movies their reasons in order, each the first true one no earlier movie of the list took: no two movies
share a reason unless nothing else is true of the later one.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator, Mapping, Sequence

from ...domain import MovieMeta, Rated, spoken_title
from ...schema import LIKED_RATING

__all__ = ["data_reason", "data_reasons", "ReasonChecker", "ListReasons", "named_genres", "GENRE_WORDS",
           "RECENT_LIKED"]

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
RECENT_LIKED = 3  # the liked movies a recency reason may name: the user's last three
_MAX_WORDS = 6  # a "<genre>, like <title>" reason longer than this drops its genre


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


def _genre_like(genre: str, liked: MovieMeta) -> str:
    text = f"{genre}, like {spoken_title(liked)}"
    return text if len(text.split()) <= _MAX_WORDS else f"like {spoken_title(liked)}"


def _genre_reasons(movie: MovieMeta, liked: Sequence[MovieMeta]) -> Iterator[str]:
    """`Crime, like Heat`: the candidate's genres the liked movies share most first, each with its liked movies,
    the most recent first."""
    counts = {g: sum(g in m.genres for m in liked) for g in movie.genres}
    for genre in sorted((g for g in counts if counts[g]), key=lambda g: -counts[g]):
        for other in reversed(liked):
            if genre in other.genres:
                yield _genre_like(genre, other)


def data_reasons(movie: MovieMeta, history: Sequence[Rated], base_reason: str = "") -> Iterator[str]:
    """Every data reason of `movie` for this user, most specific first (module docstring), `base_reason` (the
    base ranker's) first; the caller checks them."""
    liked = [r.movie for r in _liked(history) if r.movie.movie_id != movie.movie_id]
    if base_reason:
        yield base_reason
    yield from _genre_reasons(movie, liked)
    for other in reversed(liked[-RECENT_LIKED:]):
        if set(other.genres) & set(movie.genres):
            yield f"you recently liked {spoken_title(other)}"
    if movie.release_year:
        decade = movie.release_year // 10 * 10
        for other in reversed(liked):
            if other.release_year // 10 * 10 == decade:
                yield f"{decade}s, like {spoken_title(other)}"
    if movie.rating_number:
        yield f"rated {movie.average_rating:.1f} by {movie.rating_number} people here"


def data_reason(movie: MovieMeta, history: Sequence[Rated]) -> str:
    """`Crime, like Heat`: the candidate's genre the user's liked movies share most, and the most recent liked
    movie with it (`like Heat` when that is long); "" when no liked movie shares a genre."""
    liked = [r.movie for r in _liked(history)]
    return next(_genre_reasons(movie, liked), "")


# The last `known` given and its titles (one tuple, swapped whole across threads): a ranker's users share one table.
_KNOWN: tuple[object, tuple[frozenset[str], int]] = (None, (frozenset(), 0))


def _known_titles(known: Mapping[int, MovieMeta] | Iterable[MovieMeta]) -> tuple[frozenset[str], int]:
    """The names of two or more words of the known movies (a one-word title, "Heat", is too often a plain word to
    spot in prose), and the most words one has. The same table as last time (by identity) is read once."""
    global _KNOWN
    last, titles = _KNOWN
    if last is not known:
        movies = known.values() if isinstance(known, Mapping) else known
        names = frozenset(name for m in movies for name in _names(m) if len(name.split()) >= 2)
        titles = (names, max((len(n.split()) for n in names), default=0))
        _KNOWN = (known, titles)
    return titles


class ReasonChecker:
    """Checks one user's reasons (module docstring); the user's rated titles and the known titles are read once."""

    def __init__(self, history: Sequence[Rated], known: Mapping[int, MovieMeta] | Iterable[MovieMeta] = ()):
        self.history = history
        self._rated = {name: r for r in history for name in _names(r.movie)}
        self._titles, self._longest = _known_titles(known)
        self.replaced = 0

    def check(self, reason: str, movie: MovieMeta) -> str:
        """`reason` when it is true and names a genre or a rated movie, else `data_reason(movie, history)` (counted
        in `replaced`)."""
        if not reason or self._verdict(reason, movie) == (True, True):
            return reason
        self.replaced += 1
        return data_reason(movie, self.history)

    def true(self, reason: str, movie: MovieMeta) -> bool:
        return self._verdict(reason, movie)[0]

    def _verdict(self, reason: str, movie: MovieMeta) -> tuple[bool, bool]:
        """Whether `reason` is true, and whether it names anything the data confirms (a genre or a rated movie)."""
        text, paired, rated = reason, [], False
        for match in _LIKE.finditer(reason):
            row = self._rated.get(_norm(match.group(1)))
            if row is None or row.rating < LIKED_RATING:
                return False, True
            paired.append(row.movie)
            text = text.replace(match.group(1), " ")
        norm = f" {_norm(text)} "
        words = norm.split()
        spans = {" ".join(words[i:j]) for i in range(len(words))
                 for j in range(i + 2, min(len(words), i + self._longest) + 1)}
        # The longest first: "Toy Story 2", once removed, does not leave "Toy Story" to be read.
        for name in sorted((spans & self._titles) - _names(movie), key=len, reverse=True):
            if f" {name} " in norm:
                if name not in self._rated:
                    return False, True
                rated = True
                norm = norm.replace(f" {name} ", " ")  # a rated title's words are not genre names
        genres = named_genres(norm)
        if any(g not in movie.genres for g in genres):
            return False, True
        true = not paired or all(any(g in m.genres for m in paired) for g in genres)
        return true, bool(paired or rated or genres)


class ListReasons:
    """The reasons of one user's list, in its order: each movie's proposed reason (the model's) when it is true
    and no earlier movie has it, else its first data reason no earlier movie has (`data_reasons`), else its
    first data reason. Counts the proposed reasons kept (`model`) and those found false (`replaced`)."""

    def __init__(self, history: Sequence[Rated], known: Mapping[int, MovieMeta] | Iterable[MovieMeta] = (),
                 base_reasons: Mapping[int, str] | None = None):
        self.checker = ReasonChecker(history, known)
        self.base_reasons = base_reasons or {}
        self.model = 0
        self._used: set[str] = set()

    @property
    def replaced(self) -> int:
        return self.checker.replaced

    def reason(self, movie: MovieMeta, proposed: str = "") -> str:
        if proposed and proposed not in self._used:
            if self.checker.check(proposed, movie) == proposed:
                self.model += 1
                return self._take(proposed)
        base = self.base_reasons.get(movie.movie_id, "")
        # Each checked too: a title with a comma ("like Crouching Tiger, Hidden Dragon") reads as another one.
        options = [o for o in dict.fromkeys(data_reasons(movie, self.checker.history, base))
                   if self.checker.true(o, movie)]
        return self._take(next((o for o in options if o not in self._used), options[0] if options else ""))

    def _take(self, reason: str) -> str:
        self._used.add(reason)
        return reason
