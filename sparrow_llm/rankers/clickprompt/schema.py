"""Column names of the host's CTR samples (trainingSamples.csv) and how ClickPrompt reads them: one place.

The rating columns reuse `sparrow_llm.schema`; everything else is spelled here and nowhere else.
"""
from __future__ import annotations

from ...schema import (
    COL_GENRES, COL_MOVIE, COL_RATING, COL_RELEASE_YEAR, COL_TIMESTAMP, COL_TITLE, COL_USER, LIKED_RATING, NO_GENRES,
)

__all__ = [
    "COL_USER", "COL_MOVIE", "COL_RATING", "COL_TIMESTAMP", "COL_TITLE", "COL_GENRES", "LIKED_RATING",
    "COL_LABEL", "COL_RELEASE_YEAR", "MOVIE_GENRES", "COL_MOVIE_RATING_COUNT", "COL_MOVIE_AVG_RATING",
    "COL_MOVIE_RATING_STDDEV", "USER_RATED_MOVIES", "COL_USER_RATING_COUNT", "COL_USER_AVG_RELEASE_YEAR",
    "COL_USER_RELEASE_YEAR_STDDEV", "COL_USER_AVG_RATING", "COL_USER_RATING_STDDEV", "USER_GENRES",
    "SAMPLE_COLUMNS", "SAMPLE_DTYPES", "MOVIE_STAT_COLUMNS", "USER_STAT_COLUMNS", "USER_FIELDS", "MOVIE_FIELDS",
    "VOCAB_USER", "VOCAB_MOVIE", "VOCAB_GENRE", "CATEGORICAL_FIELDS", "NUMERIC_FIELDS",
    "NO_GENRES",
]

COL_LABEL = "label"
MOVIE_GENRES = tuple(f"movieGenre{i}" for i in range(1, 4))
COL_MOVIE_RATING_COUNT = "movieRatingCount"
COL_MOVIE_AVG_RATING = "movieAvgRating"
COL_MOVIE_RATING_STDDEV = "movieRatingStddev"
USER_RATED_MOVIES = tuple(f"userRatedMovie{i}" for i in range(1, 6))  # newest liked first
COL_USER_RATING_COUNT = "userRatingCount"
COL_USER_AVG_RELEASE_YEAR = "userAvgReleaseYear"
COL_USER_RELEASE_YEAR_STDDEV = "userReleaseYearStddev"
COL_USER_AVG_RATING = "userAvgRating"
COL_USER_RATING_STDDEV = "userRatingStddev"
USER_GENRES = tuple(f"userGenre{i}" for i in range(1, 6))  # most frequent among liked movies first

MOVIE_STAT_COLUMNS = (COL_MOVIE_RATING_COUNT, COL_MOVIE_AVG_RATING, COL_MOVIE_RATING_STDDEV)
USER_STAT_COLUMNS = (COL_USER_RATING_COUNT, COL_USER_AVG_RELEASE_YEAR, COL_USER_RELEASE_YEAR_STDDEV,
                     COL_USER_AVG_RATING, COL_USER_RATING_STDDEV)

# The columns that describe the user, and those that describe the movie: serving builds each once per user /
# movie and pairs them; rating, timestamp and label are neither.
USER_FIELDS = (COL_USER, *USER_RATED_MOVIES, *USER_STAT_COLUMNS, *USER_GENRES)
MOVIE_FIELDS = (COL_MOVIE, COL_RELEASE_YEAR, *MOVIE_GENRES, *MOVIE_STAT_COLUMNS)

# Exactly the host's header, in its order.
SAMPLE_COLUMNS = (
    COL_MOVIE, COL_USER, COL_RATING, COL_TIMESTAMP, COL_LABEL, COL_RELEASE_YEAR, *MOVIE_GENRES,
    *MOVIE_STAT_COLUMNS, *USER_RATED_MOVIES, *USER_STAT_COLUMNS, *USER_GENRES,
)

# One dtype per column for every source (our builder, the host's files, a later PySpark job), so frames
# compare equal. Missing values: nullable "Int64" ids/years, NaN statistics (a mean of nothing, a
# standard deviation of fewer than two values), None genres. The host writes 0 and "" instead.
SAMPLE_DTYPES: dict[str, str] = {
    COL_MOVIE: "int64", COL_USER: "int64", COL_RATING: "float64", COL_TIMESTAMP: "Int64", COL_LABEL: "Int64",
    COL_RELEASE_YEAR: "Int64", **{c: "object" for c in MOVIE_GENRES},
    COL_MOVIE_RATING_COUNT: "int64", COL_MOVIE_AVG_RATING: "float64", COL_MOVIE_RATING_STDDEV: "float64",
    **{c: "Int64" for c in USER_RATED_MOVIES},
    COL_USER_RATING_COUNT: "int64", COL_USER_AVG_RELEASE_YEAR: "float64", COL_USER_RELEASE_YEAR_STDDEV: "float64",
    COL_USER_AVG_RATING: "float64", COL_USER_RATING_STDDEV: "float64",
    **{c: "object" for c in USER_GENRES},
}

# MovieLens' marker for a movie without genres: treated as no genre at all.

# Vocabularies: fields naming the same kind of thing share one.
VOCAB_USER = "user"
VOCAB_MOVIE = "movie"
VOCAB_GENRE = "genre"
CATEGORICAL_FIELDS: tuple[tuple[str, str], ...] = (
    (COL_USER, VOCAB_USER),
    (COL_MOVIE, VOCAB_MOVIE),
    *((c, VOCAB_GENRE) for c in MOVIE_GENRES),
    *((c, VOCAB_MOVIE) for c in USER_RATED_MOVIES),
    *((c, VOCAB_GENRE) for c in USER_GENRES),
)
# Quantile-bucketed, each with its own boundaries.
NUMERIC_FIELDS: tuple[str, ...] = (COL_RELEASE_YEAR, *MOVIE_STAT_COLUMNS, *USER_STAT_COLUMNS)
