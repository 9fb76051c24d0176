"""What the benchmarks share: a stand-in host of their own on free ports, and percentiles."""
from __future__ import annotations

import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sparrow_llm.config import Settings
from sparrow_llm.bridge.host import HostProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_settings(work_dir: Path, **store) -> Settings:
    return Settings.from_env().replace(
        host={"work_dir": work_dir, "http_port": free_port()},
        bridge={"connect_file": work_dir / "gateway.json"},
        store={"dir": work_dir / "store", **store},
    )


@contextmanager
def bench_host(**store):
    """A stand-in host (or SPARROW_HOME's) under the launcher, in a temp work dir."""
    with tempfile.TemporaryDirectory(prefix="sparrow-llm-bench-") as tmp:
        settings = bench_settings(Path(tmp), **store)
        with HostProcess(settings) as host:
            yield settings, host


def pct(samples_s, q: float) -> float:
    """The q-th percentile of durations in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(samples_s) * 1000.0, q))


def host_movies(webroot: Path) -> dict:
    """{movieId: MovieMeta} of the movies the host loads from `webroot`, without starting it: the movies.csv
    lines that split into exactly three fields on "," (the host skips titles with commas), with their rating
    count and mean from ratings.csv."""
    import pandas as pd

    from sparrow_llm.catalog import YEAR_RE
    from sparrow_llm.domain import MovieMeta
    from sparrow_llm.schema import MOVIES_CSV, NO_GENRES, RATINGS_CSV

    ratings = pd.read_csv(webroot / RATINGS_CSV).groupby("movieId")["rating"].agg(["count", "mean"])
    metas = {}
    for line in (webroot / MOVIES_CSV).read_text().splitlines()[1:]:
        fields = line.split(",")
        if len(fields) != 3:
            continue
        movie_id, title = int(fields[0]), fields[1]
        year = YEAR_RE.search(title)
        count, mean = ratings.loc[movie_id] if movie_id in ratings.index else (0, 0.0)
        metas[movie_id] = MovieMeta(movie_id, YEAR_RE.sub("", title).strip(), int(year.group(1)) if year else 0,
                                    tuple(g for g in fields[2].split("|") if g != NO_GENRES), float(mean), int(count))
    return metas
