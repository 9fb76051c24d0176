"""Model inputs from samples: categorical indices (vocabularies + quantile buckets) and the sample's text.

Index 0 of every table means "unknown or missing": a user, movie or genre the training split never
showed, an empty history slot, a NaN statistic. So any user or movie can be encoded, and a model
learns one vector for "unknown" per field instead of failing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ..pretrained import read_json
from .schema import (
    CATEGORICAL_FIELDS, COL_LABEL, COL_MOVIE, COL_MOVIE_AVG_RATING, COL_MOVIE_RATING_COUNT,
    COL_RELEASE_YEAR, COL_TITLE, MOVIE_GENRES, MOVIE_STAT_COLUMNS, NUMERIC_FIELDS, USER_GENRES,
    USER_RATED_MOVIES,
)

__all__ = ["FeatureSpace", "EncodedSamples", "encode_samples", "sample_texts", "OOV"]

OOV = 0  # index of unknown / missing in every table
_FORMAT_VERSION = 1
_BUCKET_PREFIX = "bucket:"  # table name of a numeric field's buckets: one table per field


@dataclass(frozen=True, eq=False)  # equality is by content, see __eq__
class FeatureSpace:
    """Vocabularies and bucket boundaries fitted on the training split, and the movie statistics
    snapshot that serving uses as "now" (`samples.movie_stats_now`; training and evaluation never
    read it: their samples carry their own as-of-then statistics)."""

    vocabs: dict[str, tuple]  # table name -> known keys; key i has index i + 1
    edges: dict[str, tuple[float, ...]]  # numeric field -> ascending bucket boundaries
    movie_stats: pd.DataFrame  # indexed by movieId, MOVIE_STAT_COLUMNS

    @classmethod
    def fit(cls, train: pd.DataFrame, movie_stats: pd.DataFrame, n_buckets: int = 10,
            min_count: int = 1) -> "FeatureSpace":
        """Keys seen at least `min_count` times in `train` (over every field sharing the vocabulary),
        `n_buckets` quantile buckets per numeric field."""
        if n_buckets < 1 or min_count < 1:
            raise ValueError("n_buckets and min_count must be >= 1")
        vocabs = {}
        for table in dict.fromkeys(t for _, t in CATEGORICAL_FIELDS):
            values = pd.concat([train[col].dropna().astype(object) for col, t in CATEGORICAL_FIELDS if t == table])
            counts = values.value_counts()
            vocabs[table] = tuple(sorted(counts.index[counts >= min_count].tolist()))
        edges = {}
        for col in NUMERIC_FIELDS:
            values = train[col].to_numpy(dtype=np.float64, na_value=np.nan)
            values = values[np.isfinite(values)]
            cut = np.quantile(values, np.linspace(0, 1, n_buckets + 1)[1:-1]) if len(values) else np.array([])
            edges[col] = tuple(float(x) for x in np.unique(cut))
        return cls(vocabs, edges, movie_stats[list(MOVIE_STAT_COLUMNS)].copy())

    def tables(self) -> dict[str, int]:
        """Table name -> number of rows (OOV included)."""
        sizes = {name: len(keys) + 1 for name, keys in self.vocabs.items()}
        sizes.update({_BUCKET_PREFIX + col: len(cuts) + 2 for col, cuts in self.edges.items()})
        return sizes

    def field_tables(self) -> tuple[str, ...]:
        """The table of each column of `encode`'s matrix, in order."""
        return tuple(t for _, t in CATEGORICAL_FIELDS) + tuple(_BUCKET_PREFIX + c for c in NUMERIC_FIELDS)

    def field_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in CATEGORICAL_FIELDS) + NUMERIC_FIELDS

    def encode(self, samples: pd.DataFrame, only: Collection[str] | None = None) -> np.ndarray:
        """int64 [n, fields]: each field's row in its table, OOV for unknown or missing. `only`: just these
        fields (in `field_names()` order; serving encodes the user's and the movie's fields apart)."""
        lookups = {name: pd.Index(keys) for name, keys in self.vocabs.items()}
        columns = [lookups[table].get_indexer(samples[col].astype(object)) + 1 for col, table in CATEGORICAL_FIELDS
                   if only is None or col in only]
        for col in NUMERIC_FIELDS:
            if only is not None and col not in only:
                continue
            values = samples[col].to_numpy(dtype=np.float64, na_value=np.nan)
            bucket = np.searchsorted(np.asarray(self.edges[col]), values, side="right") + 1
            columns.append(np.where(np.isfinite(values), bucket, OOV))
        return np.stack(columns, axis=1).astype(np.int64) if columns else np.zeros((len(samples), 0), np.int64)

    def to_json(self) -> dict[str, Any]:
        stats = self.movie_stats
        return {
            "version": _FORMAT_VERSION,
            "vocabs": {k: list(v) for k, v in self.vocabs.items()},
            "edges": {k: list(v) for k, v in self.edges.items()},
            "movie_stats": {
                "movieId": [int(m) for m in stats.index],
                **{c: [None if isinstance(x, float) and math.isnan(x) else x for x in stats[c].tolist()]
                   for c in MOVIE_STAT_COLUMNS},
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FeatureSpace":
        if data.get("version") != _FORMAT_VERSION:
            raise ValueError(f"feature space format {data.get('version')!r}, expected {_FORMAT_VERSION}")
        raw = data["movie_stats"]
        stats = pd.DataFrame({c: pd.array(raw[c], dtype="float64") for c in MOVIE_STAT_COLUMNS},
                             index=pd.Index(raw["movieId"], dtype="int64", name=COL_MOVIE))
        stats[COL_MOVIE_RATING_COUNT] = stats[COL_MOVIE_RATING_COUNT].astype("int64")
        return cls({k: tuple(v) for k, v in data["vocabs"].items()},
                   {k: tuple(float(x) for x in v) for k, v in data["edges"].items()}, stats)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> "FeatureSpace":
        return cls.from_json(read_json(path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSpace) and self.to_json() == other.to_json()


def sample_texts(samples: pd.DataFrame, catalog: pd.DataFrame) -> list[tuple[str, str]]:
    """Each sample as (history, candidate) text, from the same features the CTR model sees:

    ("Favourite genres: Drama, Crime. User liked: Heat (1995), Casino (1995).",
     "Candidate: Fargo (1996), genres Comedy|Crime|Drama|Thriller, average rating 4.1 from 120 ratings.")

    Two parts so that truncation shortens the history, never the candidate; genres come before the
    liked titles (newest first) so that truncation drops the oldest titles first (median text is
    ~78 MiniLM tokens, over the usual 64). `catalog` is `samples.movie_catalog(movies)`.
    """
    titles = {m: _titled(t, y) for m, t, y in zip(catalog.index, catalog[COL_TITLE], catalog[COL_RELEASE_YEAR])}
    texts = []
    liked_cols = samples[list(USER_RATED_MOVIES)].to_numpy(dtype=object)
    genre_cols = samples[list(USER_GENRES)].to_numpy(dtype=object)
    movie_genre_cols = samples[list(MOVIE_GENRES)].to_numpy(dtype=object)
    for movie, liked, genres, movie_genres, count, avg in zip(
            samples[COL_MOVIE], liked_cols, genre_cols, movie_genre_cols,
            samples[COL_MOVIE_RATING_COUNT], samples[COL_MOVIE_AVG_RATING]):
        liked_titles = [titles.get(int(m), f"movie {m}") for m in liked if not pd.isna(m)]
        fav = [g for g in genres if g is not None]
        cand_genres = "|".join(g for g in movie_genres if g is not None) or "unknown"
        rated = f"average rating {avg:.1f} from {count} ratings" if count > 0 and not pd.isna(avg) else "no ratings yet"
        texts.append((
            f"Favourite genres: {', '.join(fav) or 'none yet'}. User liked: {', '.join(liked_titles) or 'nothing yet'}.",
            f"Candidate: {titles.get(int(movie), f'movie {movie}')}, genres {cand_genres}, {rated}.",
        ))
    return texts


def _titled(title: str, year: Any) -> str:
    return title if pd.isna(year) else f"{title} ({year})"


@dataclass(frozen=True)
class EncodedSamples:
    """Arrays ready for a model: categorical indices, labels and (when a tokenizer was given) tokens."""

    cat: np.ndarray  # int64 [n, fields]
    label: np.ndarray  # float32 [n]; NaN where a sample has no label (serving)
    input_ids: np.ndarray | None = None  # int64 [n, length], padded
    attention_mask: np.ndarray | None = None
    token_type_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.cat)

    @property
    def has_text(self) -> bool:
        return self.input_ids is not None

    def subset(self, rows: Sequence[int] | np.ndarray) -> "EncodedSamples":
        """The samples at `rows`, every array alike (e.g. a smaller validation set for a quick run)."""
        rows = np.asarray(rows)
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)
                                if getattr(self, f.name) is not None})

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of tensors; text is cut to the longest sequence of each batch (padding costs attention)."""
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for begin in range(0, len(order), batch_size):
            yield self.batch(order[begin:begin + batch_size])

    def batch(self, rows: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows)
        out = {"cat": torch.from_numpy(self.cat[rows]), "label": torch.from_numpy(self.label[rows])}
        if self.has_text:
            mask = self.attention_mask[rows]
            length = max(int(mask.sum(axis=1).max()), 1)
            out["attention_mask"] = torch.from_numpy(mask[:, :length])
            out["input_ids"] = torch.from_numpy(self.input_ids[rows, :length])
            out["token_type_ids"] = torch.from_numpy(self.token_type_ids[rows, :length])
        return out


def encode_samples(samples: pd.DataFrame, space: FeatureSpace, catalog: pd.DataFrame | None = None,
                   tokenizer: Any = None, max_text_len: int = 64) -> EncodedSamples:
    """Encode samples; with a Hugging Face `tokenizer` (and the movie `catalog`) also their text."""
    cat = space.encode(samples)
    label = samples[COL_LABEL].to_numpy(dtype=np.float32, na_value=np.nan)
    if tokenizer is None:
        return EncodedSamples(cat, label)
    if catalog is None:
        raise ValueError("encoding text needs the movie catalog")
    return EncodedSamples(cat, label, *_pair_tokens(tokenizer, sample_texts(samples, catalog), max_text_len))


def _pair_tokens(tokenizer: Any, texts: list[tuple[str, str]], max_len: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BERT sentence pairs `[CLS] history [SEP] candidate [SEP]`, at most `max_len` tokens, padded to the
    longest. The history gives way first: the candidate is cut only when it alone does not fit.
    (The tokenizer's own "only_first" truncation raises instead, and "longest_first" cuts both.)"""
    if max_len < 4:
        raise ValueError("max_text_len must leave room for [CLS], two [SEP] and a token")
    budget = max_len - 3
    histories = tokenizer([h for h, _ in texts], add_special_tokens=False)["input_ids"] if texts else []
    candidates = tokenizer([c for _, c in texts], add_special_tokens=False)["input_ids"] if texts else []
    rows = []
    for history, candidate in zip(histories, candidates):
        candidate = candidate[:budget]
        history = history[:budget - len(candidate)]
        rows.append(([tokenizer.cls_token_id, *history, tokenizer.sep_token_id], [*candidate, tokenizer.sep_token_id]))
    width = max((len(a) + len(b) for a, b in rows), default=0)
    ids = np.full((len(rows), width), tokenizer.pad_token_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for i, (first, second) in enumerate(rows):
        ids[i, :len(first) + len(second)] = first + second
        mask[i, :len(first) + len(second)] = 1
        types[i, len(first):len(first) + len(second)] = 1
    return ids, mask, types
