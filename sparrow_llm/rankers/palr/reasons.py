"""True reasons: a reason that names a genre or a title is checked against the data before it is stored.

A reason is true when every genre it names is one of the candidate's genres, every movie it names (a
"like X" phrase, or any known title of two or more words) is one the user rated, a "like X" movie is one the
user liked, and a named genre is also a genre of the liked movie it is paired with ("Comedy, like
Schindler's List" names a title that lacks that genre); a title named alone ("Rob Roy" beside Blade Runner) stands
for "because you liked it": a liked movie that shares a genre with the candidate, and no other words than "you
liked" and the like ("The Lion King II" is not a reason). A false reason is replaced by a data reason, which is
true by construction. A model's reason that names neither a genre nor a rated movie asserts nothing the data can
confirm ("Why I Love the Monsters"): it is replaced too.

Data reasons (`data_reasons`, most specific first): the base ranker's own reason when it is true ("liked by
70 people who also liked Heat": ease-recent's co-occurrence), a shared genre with each liked movie that has
it ("Crime, like Heat"), a recently liked movie that shares a genre ("you recently liked Heat"), a liked
movie of the same decade ("1990s, like Heat"), and how the movie is rated here. `ListReasons` gives a list's
movies their reasons in order, each the first true one no earlier movie of the list took: no two movies
share a reason unless nothing else is true of the later one.

Profiles are held to the same rule (`checked_profile`): the model's four lines are kept only when each says
only what the history shows (`Likes:` genres of liked movies, `Dislikes:` genres of movies rated low or
"none", `Eras:` decades of liked movies, `Loved:` titles of liked movies), else the user's data profile
(`data_profile`, the same four lines counted from the history) stands in for it.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator, Mapping, Sequence

from ...domain import MovieMeta, Rated, spoken_title
from ...schema import LIKED_RATING

__all__ = ["data_reason", "data_reasons", "ReasonChecker", "ListReasons", "named_genres", "GENRE_WORDS",
           "RECENT_LIKED", "PROFILE_KEYS", "PROFILE_RULE", "DISLIKED_RATING", "data_profile", "checked_profile"]

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
# The words a reason may add to a title named alone ("you liked Rob Roy", "because you loved Rob Roy").
_TITLE_FILLER = frozenset({"you", "liked", "loved", "enjoyed", "because", "since", "as", "also", "and"})


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


def _decade(movie: MovieMeta) -> int | None:
    return movie.release_year // 10 * 10 if movie.release_year else None


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
    if (decade := _decade(movie)) is not None:
        for other in reversed(liked):
            if _decade(other) == decade:
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
                row = self._rated.get(name)
                # A title named alone ("Rob Roy" for Blade Runner) stands for "because you liked it": a liked movie
                # that shares a genre with the candidate.
                if row is None or (not paired and (row.rating < LIKED_RATING
                                                   or not set(row.movie.genres) & set(movie.genres))):
                    return False, True
                rated = True
                norm = norm.replace(f" {name} ", " ")  # a rated title's words are not genre names
        genres = named_genres(norm)
        if any(g not in movie.genres for g in genres):
            return False, True
        if rated and not paired and not genres and set(norm.split()) - _TITLE_FILLER:
            return False, True  # "The Lion King II": a title alone with words the data cannot confirm
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


PROFILE_KEYS = ("Likes", "Dislikes", "Eras", "Loved")  # the profile template's lines, in order
PROFILE_RULE = "checked1"  # in every profile's version: a new rule here makes the profile job write them again
DISLIKED_RATING = 2.5  # at or below: a movie the user rates low
_NONE = {"", "none", "nothing", "n a", "no", "-"}
_SEPARATORS = re.compile(r"\b(?:and|or|movies|films|the)\b|[^\w]+", re.IGNORECASE)
_DECADE = re.compile(r"\b(\d{3}0)s\b")
_PROFILE_LINE = re.compile(r"^\s*(" + "|".join(PROFILE_KEYS) + r")\s*:(.*)$", re.IGNORECASE)


def _low(history: Sequence[Rated]) -> list[MovieMeta]:
    return [r.movie for r in history if r.rating <= DISLIKED_RATING]


def _top(counts: Mapping, n: int) -> list:
    return [k for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))) if c][:n]


def data_profile(history: Sequence[Rated]) -> str:
    """The four profile lines counted from the history (oldest first): the 3 genres most liked movies share, the
    2 genres of the movies rated low that no liked line names, the 2 decades with most liked movies, and the 3
    most recent movies at the user's highest rating."""
    liked, low = [r.movie for r in _liked(history)], _low(history)
    likes = _top({g: sum(g in m.genres for m in liked) for m in liked for g in m.genres}, 3)
    dislikes = _top({g: sum(g in m.genres for m in low) for m in low for g in m.genres if g not in likes}, 2)
    eras = _top({d: sum(_decade(m) == d for m in liked) for m in liked if (d := _decade(m))}, 2)
    best = max((r.rating for r in history), default=0.0)
    loved = [spoken_title(r.movie) for r in reversed(history) if r.rating == best and r.rating >= LIKED_RATING][:3]
    return "\n".join(f"{key}: {value}" for key, value in zip(PROFILE_KEYS, (
        ", ".join(likes) or "none", ", ".join(dislikes) or "none", ", ".join(f"{d}s" for d in eras) or "none",
        "; ".join(loved) or "none")))


def _only(text: str, allowed: Iterable[str]) -> bool:
    """Whether `text` (normalised) says nothing but the `allowed` names (normalised), joined by separators."""
    rest = f" {text} "
    for name in sorted(allowed, key=len, reverse=True):
        rest = rest.replace(f" {name} ", " ")
    return not _SEPARATORS.sub(" ", rest).strip()


def _genre_line(value: str, movies: Sequence[MovieMeta], *, may_be_none: bool) -> bool:
    if _norm(value) in _NONE:
        return may_be_none
    allowed = {g for m in movies for g in m.genres}
    words = {_norm(w) for g in allowed for w in GENRE_WORDS.get(g, (g,))}
    named = named_genres(value)
    return bool(named) and named <= allowed and _only(_norm(value), words)


def _profile_true(lines: Mapping[str, str], history: Sequence[Rated]) -> bool:
    liked = [r.movie for r in _liked(history)]
    eras = {int(d) for d in _DECADE.findall(lines["eras"])}
    titles = {name for m in liked for name in _names(m)}
    loved = _norm(lines["loved"])
    return (_genre_line(lines["likes"], liked, may_be_none=False)
            and _genre_line(lines["dislikes"], _low(history), may_be_none=True)
            and bool(eras) and eras <= {_decade(m) for m in liked}
            and _only(_norm(_DECADE.sub(" ", lines["eras"])), ())
            and bool(loved) and _only(loved, titles) and any(f" {t} " in f" {loved} " for t in titles))


def checked_profile(text: str, history: Sequence[Rated]) -> tuple[str, bool]:
    """The model's profile when it is the four lines, each true of `history` (module docstring), else the data
    profile; and whether the model's was kept."""
    lines: dict[str, str] = {}
    for line in text.strip().splitlines():
        match = _PROFILE_LINE.match(line)
        if match is None or match.group(1).casefold() in lines:
            break
        lines[match.group(1).casefold()] = match.group(2).strip()
    if list(lines) == [k.casefold() for k in PROFILE_KEYS] and _profile_true(lines, history):
        return "\n".join(f"{key}: {lines[key.casefold()]}" for key in PROFILE_KEYS), True
    return data_profile(history), False
