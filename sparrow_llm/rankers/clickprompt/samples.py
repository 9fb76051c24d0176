"""CTR samples in the host's own schema (trainingSamples.csv), built from ratings + movies without leakage.

Every user and movie feature of a sample is computed from ratings strictly *before* the sample's
timestamp: ratings of the same second do not see each other (the fixture has thousands of same-second
pairs of one user). The host's feature job differs on purpose: its movie statistics cover all ratings
(the future included), its user window is the last 100 ratings, and it drops a user's first ratings;
here the statistics are expanding (the whole past) and every rating gives a sample.

Definitions a second implementation (the later PySpark job) must follow:
  label = rating >= 3.5; releaseYear from the title's trailing "(YYYY)"; movieGenre1..3 = the movie's
  first three genres in movies.csv order; movie* = count / mean / sample stddev (ddof 1) of the movie's
  earlier ratings; userRatedMovie1..5 = the user's most recent earlier liked (>= 3.5) movies, newest
  first, ties within a second broken by the larger movieId first; userRatingCount, userAvgRating,
  userRatingStddev over all earlier ratings; userAvgReleaseYear / userReleaseYearStddev over the earlier
  rated movies with a known year; userGenre1..5 = genres counted over the earlier liked movies, most
  frequent first, ties by genre name. A mean of nothing and a stddev of fewer than two values are NaN.

The whole job is vectorised: per user (or movie) the history is one sorted run of rows, `searchsorted`
finds where "strictly before t" ends, and sums over a run are differences of one prefix sum.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import pandas as pd

from ...catalog import movie_catalog
from .schema import (
    COL_GENRES, COL_LABEL, COL_MOVIE, COL_MOVIE_AVG_RATING, COL_MOVIE_RATING_COUNT, COL_MOVIE_RATING_STDDEV,
    COL_RATING, COL_RELEASE_YEAR, COL_TIMESTAMP, COL_USER, COL_USER_AVG_RATING,
    COL_USER_AVG_RELEASE_YEAR, COL_USER_RATING_COUNT, COL_USER_RATING_STDDEV, COL_USER_RELEASE_YEAR_STDDEV,
    LIKED_RATING, MOVIE_FIELDS, MOVIE_GENRES, MOVIE_STAT_COLUMNS, SAMPLE_COLUMNS, SAMPLE_DTYPES,
    USER_FIELDS, USER_GENRES, USER_RATED_MOVIES,
)

__all__ = [
    "Split", "movie_catalog", "build_samples", "time_split", "read_host_samples", "movie_stats_now",
    "candidate_samples", "samples_at", "user_rows", "movie_rows", "history_frame", "read_sample_splits",
    "SPLIT_NAMES",
]

# "Now" for a query: later than any history row.
_NOW = np.iinfo(np.int64).max
# Ratings are summed as integers of hundredths (see `_moments`).
_RATING_SCALE = 100
# Folders of a split sample set (the `sparrow-llm features` job's output), in `Split` order.
SPLIT_NAMES = ("train", "valid", "test")


class Split(NamedTuple):
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    valid_from: int  # first timestamp of validation
    test_from: int  # first timestamp of test


def build_samples(ratings: pd.DataFrame, movies: pd.DataFrame) -> pd.DataFrame:
    """One sample per rating, in the host's columns and `SAMPLE_DTYPES`, sorted by (timestamp, userId, movieId)."""
    history = history_frame(ratings)
    queries = history.sort_values([COL_TIMESTAMP, COL_USER, COL_MOVIE], kind="stable").reset_index(drop=True)
    catalog = movie_catalog(movies)
    movie_ids = queries[COL_MOVIE].to_numpy()
    ts = queries[COL_TIMESTAMP].to_numpy()
    stats = _movie_stats(history, movie_ids, ts)
    return _assemble(queries, queries[COL_RATING].to_numpy(), ts, catalog, stats, history)


def movie_stats_now(ratings: pd.DataFrame) -> pd.DataFrame:
    """Each rated movie's statistics over all of `ratings`, indexed by movieId: the serving-time snapshot."""
    history = history_frame(ratings)
    movie_ids = np.unique(history[COL_MOVIE].to_numpy())
    stats = _movie_stats(history, movie_ids, np.full(len(movie_ids), _NOW))
    return stats.set_index(pd.Index(movie_ids, name=COL_MOVIE))


def candidate_samples(user_id: int, history: pd.DataFrame, candidate_ids: Iterable[int],
                      catalog: pd.DataFrame, movie_stats: pd.DataFrame) -> pd.DataFrame:
    """Samples of (user, candidate) as of now: user features over the user's whole `history` (movieId,
    rating, timestamp), movie statistics from the `movie_stats` snapshot (see `movie_stats_now`),
    release year and genres from `catalog` (`movie_catalog`). rating, timestamp and label are missing."""
    history = history_frame(history.assign(**{COL_USER: user_id}))
    candidates = np.fromiter((int(c) for c in candidate_ids), dtype=np.int64)
    queries = pd.DataFrame({COL_MOVIE: candidates, COL_USER: np.full(len(candidates), user_id, dtype=np.int64)})
    return _assemble(queries, np.full(len(candidates), np.nan), np.full(len(candidates), _NOW),
                     catalog, _snapshot(movie_stats, candidates), history)


def samples_at(history: pd.DataFrame, user_ids: np.ndarray, movie_ids: np.ndarray, ts: np.ndarray,
               catalog: pd.DataFrame) -> pd.DataFrame:
    """Samples of (user, movie) pairs as of each pair's `ts`: every feature from `history` rows strictly
    before it, as `build_samples` computes them for a rating; rating and label are missing."""
    history = history_frame(history)
    movie_ids, ts = np.asarray(movie_ids, dtype=np.int64), np.asarray(ts, dtype=np.int64)
    queries = pd.DataFrame({COL_MOVIE: movie_ids, COL_USER: np.asarray(user_ids, dtype=np.int64)})
    return _assemble(queries, np.full(len(queries), np.nan), ts, catalog, _movie_stats(history, movie_ids, ts),
                     history)


def user_rows(history: pd.DataFrame, keys: np.ndarray, user_ids: np.ndarray, catalog: pd.DataFrame) -> pd.DataFrame:
    """`USER_FIELDS` of many users as of now, one row each: `history` rows carry `keys` in its userId column
    (one key per user, so a user listed twice keeps two histories), userId is set to `user_ids`."""
    features = _user_features(history_frame(history), np.asarray(keys, dtype=np.int64), np.full(len(keys), _NOW),
                              catalog)
    frame = pd.DataFrame({COL_USER: np.asarray(user_ids, dtype=np.int64),
                          **{c: features[c] for c in USER_FIELDS[1:]}})
    return frame.astype({c: SAMPLE_DTYPES[c] for c in USER_FIELDS})


def movie_rows(movie_ids: np.ndarray, catalog: pd.DataFrame, movie_stats: pd.DataFrame) -> pd.DataFrame:
    """`MOVIE_FIELDS` of movies as of the `movie_stats` snapshot (`movie_stats_now`), one row each."""
    frame = pd.DataFrame(_movie_columns(np.asarray(movie_ids, dtype=np.int64), catalog, _snapshot(movie_stats, movie_ids)))
    return frame.astype({c: SAMPLE_DTYPES[c] for c in MOVIE_FIELDS})


def _snapshot(movie_stats: pd.DataFrame, movie_ids: np.ndarray) -> pd.DataFrame:
    """The snapshot's statistics of `movie_ids`; a movie it lacks has 0 ratings and NaN mean and stddev."""
    stats = movie_stats.reindex(np.asarray(movie_ids, dtype=np.int64)).reset_index(drop=True)
    stats[COL_MOVIE_RATING_COUNT] = stats[COL_MOVIE_RATING_COUNT].fillna(0)
    return stats


def history_frame(ratings: pd.DataFrame) -> pd.DataFrame:
    """Ratings reduced to userId, movieId, rating, timestamp with fixed dtypes (a user's rows may lack userId)."""
    missing = {COL_USER, COL_MOVIE, COL_RATING, COL_TIMESTAMP} - set(ratings.columns)
    if missing:
        raise ValueError(f"ratings lack columns {sorted(missing)}")
    return pd.DataFrame({
        COL_USER: ratings[COL_USER].astype("int64").to_numpy(),
        COL_MOVIE: ratings[COL_MOVIE].astype("int64").to_numpy(),
        COL_RATING: ratings[COL_RATING].astype("float64").to_numpy(),
        COL_TIMESTAMP: ratings[COL_TIMESTAMP].astype("int64").to_numpy(),
    })


def _assemble(queries: pd.DataFrame, rating: np.ndarray, ts: np.ndarray, catalog: pd.DataFrame,
              movie_stats: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The host's columns for `queries` (movieId, userId), features as of `ts` (`_NOW` = after all history)."""
    label = pd.array(np.where(np.isnan(rating), pd.NA, rating >= LIKED_RATING), dtype="Int64")
    timestamp = pd.array(np.where(ts == _NOW, pd.NA, ts), dtype="Int64")
    parts = {
        COL_USER: queries[COL_USER].to_numpy(), COL_RATING: rating, COL_TIMESTAMP: timestamp, COL_LABEL: label,
        **_movie_columns(queries[COL_MOVIE].to_numpy(), catalog, movie_stats),
        **_user_features(history, queries[COL_USER].to_numpy(), ts, catalog),
    }
    frame = pd.DataFrame({c: parts[c] for c in SAMPLE_COLUMNS})
    return frame.astype(SAMPLE_DTYPES)


def _movie_columns(movie_ids: np.ndarray, catalog: pd.DataFrame, movie_stats: pd.DataFrame) -> dict[str, Any]:
    """`MOVIE_FIELDS` of each movie: catalogue year and genres, and `movie_stats` (rows aligned with `movie_ids`)."""
    known = catalog.reindex(movie_ids)
    genres = _pad([g if isinstance(g, tuple) else () for g in known[COL_GENRES]], len(MOVIE_GENRES))
    return {COL_MOVIE: movie_ids, COL_RELEASE_YEAR: known[COL_RELEASE_YEAR].to_numpy(),
            **dict(zip(MOVIE_GENRES, genres)), **{c: movie_stats[c].to_numpy() for c in MOVIE_STAT_COLUMNS}}


def _pad(lists: list[tuple], width: int) -> list[list]:
    """Column-wise view of the first `width` items of each list, None where a list is shorter."""
    return [[items[i] if i < len(items) else None for items in lists] for i in range(width)]


class _Timeline:
    """History rows grouped by key (a user or a movie) and sorted by time; answers "which rows of this
    key came strictly before t" as a half-open run [start, stop) of the sorted rows."""

    def __init__(self, keys: np.ndarray, ts: np.ndarray, tiebreak: np.ndarray):
        self.order = np.lexsort((tiebreak, ts, keys))
        self._keys = np.unique(keys)
        self._t0 = int(ts.min()) if len(ts) else 0
        # One int64 per row orders (key, ts): the key's code times a span longer than the time range.
        self._span = (int(ts.max()) - self._t0 + 2) if len(ts) else 1
        codes = np.searchsorted(self._keys, keys[self.order])
        self._sorted = codes * self._span + (ts[self.order] - self._t0)

    def before(self, keys: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = np.searchsorted(self._keys, keys)
        known = codes < len(self._keys)
        known[known] = self._keys[codes[known]] == keys[known]
        # Clipping keeps "before t" exact: t before the first row sees nothing, t after the last sees all.
        rel = np.clip(ts, self._t0, self._t0 + self._span - 1) - self._t0
        base = codes * self._span
        start = np.searchsorted(self._sorted, base, side="left")
        stop = np.searchsorted(self._sorted, base + rel, side="left")
        return np.where(known, start, 0), np.where(known, stop, 0)

    def prefix_sums(self, values: np.ndarray) -> np.ndarray:
        """Cumulative sums of `values` (rows in history order) in sorted order, with a leading zero row."""
        sorted_values = values[self.order]
        zero = np.zeros((1, *sorted_values.shape[1:]), dtype=sorted_values.dtype)
        return np.concatenate([zero, np.cumsum(sorted_values, axis=0)])


def _moments(timeline: _Timeline, values: np.ndarray, start: np.ndarray, stop: np.ndarray, scale: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sample stddev of the finite `values` in each run; NaN where undefined.

    Sums are exact integers: values are scaled (`scale` 100 keeps two decimals of a rating, 1 a year),
    so a run's mean and variance are each one division, the same whatever else is in the history
    (a float prefix-sum difference would carry rounding from unrelated, even later, rows), and a run
    of equal ratings has stddev exactly 0. Centring on an integer only keeps the int64 sums small.
    """
    present = np.isfinite(values)
    scaled = np.round(np.where(present, values, 0.0) * scale).astype(np.int64)
    offset = int(np.round(scaled[present].mean())) if present.any() else 0
    centred = np.where(present, scaled - offset, 0)
    sums = timeline.prefix_sums(np.stack([present.astype(np.int64), centred, centred * centred], axis=1))
    n, s, ss = (sums[stop] - sums[start]).T
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, (s + n * offset) / (n * scale), np.nan)
        var = np.where(n > 1, (n * ss - s * s) / (n * (n - 1.0) * scale * scale), np.nan)
    return n, mean, np.sqrt(var)


def _movie_stats(history: pd.DataFrame, movie_ids: np.ndarray, ts: np.ndarray) -> pd.DataFrame:
    timeline = _Timeline(history[COL_MOVIE].to_numpy(), history[COL_TIMESTAMP].to_numpy(),
                         history[COL_USER].to_numpy())
    start, stop = timeline.before(movie_ids, ts)
    n, mean, std = _moments(timeline, history[COL_RATING].to_numpy(), start, stop, _RATING_SCALE)
    return pd.DataFrame({COL_MOVIE_RATING_COUNT: n, COL_MOVIE_AVG_RATING: mean, COL_MOVIE_RATING_STDDEV: std})


def _user_features(history: pd.DataFrame, user_ids: np.ndarray, ts: np.ndarray,
                   catalog: pd.DataFrame) -> dict[str, Any]:
    users = history[COL_USER].to_numpy()
    movies = history[COL_MOVIE].to_numpy()
    times = history[COL_TIMESTAMP].to_numpy()
    ratings = history[COL_RATING].to_numpy()
    timeline = _Timeline(users, times, movies)
    start, stop = timeline.before(user_ids, ts)
    n, avg_rating, std_rating = _moments(timeline, ratings, start, stop, _RATING_SCALE)
    years = catalog[COL_RELEASE_YEAR].reindex(movies).to_numpy(dtype=np.float64, na_value=np.nan)
    _, avg_year, std_year = _moments(timeline, years, start, stop, 1)

    liked = ratings >= LIKED_RATING
    liked_line = _Timeline(users[liked], times[liked], movies[liked])
    lstart, lstop = liked_line.before(user_ids, ts)
    # The run's last rows are the newest: userRatedMovie1 is row stop-1, userRatedMovie2 row stop-2, ...
    liked_sorted = np.append(movies[liked][liked_line.order], 0)  # a dummy row keeps empty runs indexable
    recent = {}
    for back, col in enumerate(USER_RATED_MOVIES, start=1):
        idx = lstop - back
        has = idx >= lstart
        recent[col] = pd.array(np.where(has, liked_sorted[np.where(has, idx, -1)], pd.NA), dtype="Int64")
    return {
        COL_USER_RATING_COUNT: n, COL_USER_AVG_RELEASE_YEAR: avg_year, COL_USER_RELEASE_YEAR_STDDEV: std_year,
        COL_USER_AVG_RATING: avg_rating, COL_USER_RATING_STDDEV: std_rating,
        **recent,
        **dict(zip(USER_GENRES, _top_genres(liked_line, movies[liked], catalog, lstart, lstop))),
    }


def _top_genres(liked_line: _Timeline, liked_movies: np.ndarray, catalog: pd.DataFrame,
                start: np.ndarray, stop: np.ndarray) -> list[np.ndarray]:
    """userGenre1..5 columns: genre counts over each run of liked movies, most frequent first."""
    names = np.array(sorted({g for gs in catalog[COL_GENRES] for g in gs}) + [None], dtype=object)
    column = {g: i for i, g in enumerate(names[:-1])}
    # One column per genre plus an always-zero one, so fewer than five genres still fill five slots.
    onehot = np.zeros((len(catalog) + 1, len(names)), dtype=np.int32)
    for row, gs in enumerate(catalog[COL_GENRES]):
        onehot[row, [column[g] for g in gs]] = 1
    rows = catalog.index.get_indexer(liked_movies)  # -1 (not in the catalog) picks the all-zero last row
    sums = liked_line.prefix_sums(onehot[rows])
    counts = sums[stop] - sums[start]
    # Names are sorted, so a stable sort on -count breaks ties by name.
    order = np.argsort(-counts, axis=1, kind="stable")
    slots = []
    for i in range(len(USER_GENRES)):
        pick = order[:, i] if i < order.shape[1] else np.full(len(order), len(names) - 1)
        has = np.take_along_axis(counts, pick[:, None], axis=1)[:, 0] > 0
        slots.append(np.where(has, names[pick], None))
    return slots


def time_split(samples: pd.DataFrame, test_frac: float = 0.2, valid_frac: float = 0.1) -> Split:
    """Split by time as the host does (a timestamp quantile): test = samples at or after the
    (1 - test_frac) quantile of timestamps, validation = the same rule with valid_frac on the rest.
    Cut-offs are timestamps, so one second never straddles two parts."""
    for name, frac in (("test_frac", test_frac), ("valid_frac", valid_frac)):
        if not 0.0 < frac < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {frac}")
    ts = samples[COL_TIMESTAMP].to_numpy(dtype=np.int64)
    if len(ts) == 0:
        raise ValueError("no samples to split")
    test_from = _cut_off(ts, test_frac)
    rest = ts < test_from
    valid_from = _cut_off(ts[rest], valid_frac) if rest.any() else test_from
    test = ~rest
    valid = rest & (ts >= valid_from)
    train = rest & ~valid
    return Split(samples[train].reset_index(drop=True), samples[valid].reset_index(drop=True),
                 samples[test].reset_index(drop=True), valid_from, test_from)


def _cut_off(ts: np.ndarray, frac: float) -> int:
    """The first timestamp of the latest `frac` of `ts`."""
    return int(np.quantile(ts, 1.0 - frac, method="higher"))


def read_sample_splits(folder: str | Path, valid_frac: float = 0.1) -> Split:
    """Samples already split (the `sparrow-llm features` job's CSV output: `train/`, `valid/`, `test/`, each
    of `part-*.csv` files in the host's columns) as a `Split`.

    The host's own split passed through without re-splitting has an empty `valid/`: then the latest
    `valid_frac` of train (by time) becomes validation, so early stopping never reads the test part.
    """
    folder = Path(folder)
    parts = []
    for name in SPLIT_NAMES:
        if not (folder / name).is_dir():
            raise ValueError(f"{folder} has no {name}/ folder: expected the CSV output of `sparrow-llm features`")
        # Spark may leave an empty file for an empty partition: no header, nothing to read.
        files = [f for f in sorted((folder / name).glob("part-*.csv")) if f.stat().st_size > 0]
        frames = [read_host_samples(f) for f in files]
        parts.append(pd.concat(frames, ignore_index=True).astype(SAMPLE_DTYPES) if frames else _empty_samples())
    train, valid, test = parts
    if train.empty or test.empty:
        raise ValueError(f"{folder}: train/ and test/ must hold samples (got {len(train)} and {len(test)} rows)")
    if valid.empty:
        ts = train[COL_TIMESTAMP].to_numpy(dtype=np.int64)
        late = ts >= _cut_off(ts, valid_frac)
        train, valid = train[~late].reset_index(drop=True), train[late].reset_index(drop=True)
    test_from = int(test[COL_TIMESTAMP].min())
    return Split(train, valid, test, int(valid[COL_TIMESTAMP].min()) if len(valid) else test_from, test_from)


def _empty_samples() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=SAMPLE_DTYPES[c]) for c in SAMPLE_COLUMNS})


def read_host_samples(path: str | Path) -> pd.DataFrame:
    """The host's trainingSamples.csv / testSamples.csv in `SAMPLE_DTYPES`. Empty fields ("" for a missing
    userRatedMovieN or genre) become missing; the host's 0-filled statistics stay 0, as it wrote them."""
    frame = pd.read_csv(path, dtype={c: "string" for c in (*MOVIE_GENRES, *USER_GENRES)}, keep_default_na=False,
                        na_values={c: [""] for c in SAMPLE_COLUMNS})
    if tuple(frame.columns) != SAMPLE_COLUMNS:
        raise ValueError(f"{path}: columns {list(frame.columns)} are not the host's sample columns")
    for col in (*MOVIE_GENRES, *USER_GENRES):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame.astype(SAMPLE_DTYPES)
