"""`run_knowledge`: the language models' per-movie text vectors (KAR-style), prestored by a Spark job.

Each movie's text ("Title (Year). Genres: a, b") goes through a language model, one per source
(`features.TEXT_SOURCES`): `knowledge`, the local LLM (`local_lm.load_model`, SmolLM2-135M by default; the
vector is the mean of the last hidden states over the text's tokens), and `minilm`, the sentence encoder
(all-MiniLM-L6-v2). Serving reads them back (`load_texts`): a lookup, no forward pass.

  * Kept under `<work dir>/ltr/knowledge/<model key>-<movies key>/` (the MiniLM's key starts `minilm-`; the
    movies key hashes movies.csv, all the texts read, so folders of the same movies share them), so another
    model or movie list never reads them, as `chunk-<n>-<hash of its movies' texts>.npz` files of
    `CHUNK` movies each.
  * Resumable like the profiles job: the driver lists the chunks whose file is missing and only those are
    computed (a second run over the same folder computes nothing); each partition loads the model once and
    writes each chunk atomically (temporary file renamed), so a killed job loses only the chunks in flight.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from ...catalog import movie_catalog
from ...config import ConfigError, LLMSettings, Settings
from ...datafolder import file_hash, read_data_csv
from ...minilm import mean_pool, minilm
from ...minilm import model_path as minilm_path
from ...schema import COL_GENRES, COL_RELEASE_YEAR, COL_TITLE, MOVIES_CSV
from ...spark import session, task_progress
from ..llm.local_lm import load_model, model_key, model_source
from .features import ADAPTED, TEXT_SOURCES

__all__ = ["KnowledgeSummary", "knowledge_dir", "knowledge_key", "movie_texts", "run_knowledge", "load_knowledge",
           "load_texts", "sources_of", "CHUNK"]

CHUNK = 64  # movies per file, and per forward pass
_MAX_TOKENS = 64


@dataclass(frozen=True)
class KnowledgeSummary:
    directory: Path
    movies: int
    chunks: int
    computed: int  # chunks computed by this run (the rest were kept)
    wall_s: float

    def line(self) -> str:
        return (f"knowledge vectors: {self.movies} movies in {self.chunks} chunks, {self.computed} computed now, "
                f"{self.chunks - self.computed} kept, in {self.wall_s:.1f} s -> {self.directory}")


def _model_key(settings: Settings, source: str) -> str:
    return (f"minilm-{model_key(Path(minilm_path()))}" if source == "minilm" else
            model_key(model_source(settings.llm.local_model)))


def knowledge_key(settings: Settings, source: str = "knowledge") -> str:
    """The source's model content key and the data folder's movies.csv's."""
    return f"{_model_key(settings, source)}-{file_hash(settings.host.data_webroot / MOVIES_CSV)[:16]}"


def knowledge_dir(settings: Settings, source: str = "knowledge") -> Path:
    return settings.host.work_dir / "ltr" / "knowledge" / knowledge_key(settings, source)


def sources_of(names: Sequence[str]) -> tuple[str, ...]:
    """The text sources the features `names` read (the adapted vectors read the knowledge vectors)."""
    names = [n.replace(f"{ADAPTED}_", "knowledge_", 1) for n in names]
    return tuple(s for s in TEXT_SOURCES if any(n.startswith(f"{s}_") for n in names))


def movie_texts(webroot: Path) -> pd.Series:
    """movieId -> "Title (Year). Genres: a, b" of every movie of movies.csv, by movieId."""
    catalog = movie_catalog(read_data_csv(webroot / MOVIES_CSV)).sort_index()
    labels = [f"{t} ({int(y)})" if not pd.isna(y) else t for t, y in zip(catalog[COL_TITLE], catalog[COL_RELEASE_YEAR])]
    return pd.Series([f"{label}. Genres: {', '.join(g) or 'unknown'}" for label, g in zip(labels, catalog[COL_GENRES])],
                     index=catalog.index)


def _chunk_name(number: int, ids: Sequence[int], texts: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(f"{m}\t{t}" for m, t in zip(ids, texts)).encode()).hexdigest()[:12]
    return f"chunk-{number:05d}-{digest}.npz"


def _embed_minilm(llm: LLMSettings, texts: list[str]) -> np.ndarray:
    return minilm().embed(texts)


def _embed_lm(llm: LLMSettings, texts: list[str]) -> np.ndarray:
    import torch

    lm = load_model(model_source(llm.local_model), llm.models_dir, threads=llm.local_threads)
    encoded = lm.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=_MAX_TOKENS,
                           add_special_tokens=False)
    with lm.lock, torch.inference_mode():
        out = lm.model(**encoded, output_hidden_states=True, logits_to_keep=1)
    return mean_pool(out.hidden_states[-1].float(), encoded["attention_mask"]).numpy().astype(np.float32)


_EMBED = {"knowledge": _embed_lm, "minilm": _embed_minilm}


def _embed_partition(llm: LLMSettings, source: str, directory: str,
                     chunks: Iterable[tuple[str, list[int], list[str]]]) -> Iterator[int]:
    """One partition: each chunk's vectors, written atomically; yields the movies written."""
    for name, ids, texts in chunks:
        vectors = _EMBED[source](llm, texts)
        fd, tmp = tempfile.mkstemp(prefix=".chunk-", suffix=".npz", dir=directory)
        os.close(fd)
        try:
            np.savez(tmp, ids=np.asarray(ids, dtype=np.int64), vectors=vectors)
            os.replace(tmp, os.path.join(directory, name))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        yield len(ids)


def run_knowledge(settings: Settings, *, source: str = "knowledge", master: str = "local[*]",
                  spark: SparkSession | None = None, progress: bool = True) -> KnowledgeSummary:
    """The source's vector of every movie of the data folder, computed for the chunks not kept yet."""
    if source not in _EMBED:
        raise ConfigError(f"no text source {source!r} (known: {', '.join(_EMBED)})")
    texts = movie_texts(settings.host.data_webroot)
    directory = knowledge_dir(settings, source)
    directory.mkdir(parents=True, exist_ok=True)
    ids, values = [int(m) for m in texts.index], list(texts)
    chunks = [(_chunk_name(n, ids[s:s + CHUNK], values[s:s + CHUNK]), ids[s:s + CHUNK], values[s:s + CHUNK])
              for n, s in enumerate(range(0, len(ids), CHUNK))]
    missing = [c for c in chunks if not (directory / c[0]).is_file()]
    started = time.perf_counter()
    if missing:
        with session(spark, master, "sparrow-llm-knowledge") as spark:
            with task_progress(spark, "knowledge vectors", progress):
                sc = spark.sparkContext
                sc.parallelize(missing, min(len(missing), sc.defaultParallelism)).mapPartitions(
                    partial(_embed_partition, settings.llm, source, os.fspath(directory))).sum()
    return KnowledgeSummary(directory, len(ids), len(chunks), len(missing), time.perf_counter() - started)


def load_knowledge(directory: Path) -> dict[int, np.ndarray]:
    """movieId -> knowledge vector, from the kept chunks (of the movies the data folder still lists)."""
    files = sorted(directory.glob("chunk-*.npz")) if directory.is_dir() else []
    if not files:
        raise ConfigError(f"no knowledge vectors in {directory} (run the llm-ltr preparation first)")
    vectors: dict[int, np.ndarray] = {}
    for path in files:
        with np.load(path) as data:
            vectors.update(zip(data["ids"].tolist(), data["vectors"]))
    return vectors


def load_texts(settings: Settings, sources: Sequence[str]) -> dict[str, dict[int, np.ndarray]]:
    """source -> movieId -> vector, of the kept chunks of each source."""
    return {source: load_knowledge(knowledge_dir(settings, source)) for source in sources}
