"""`sparrow-llm eval`: does each rerank stage rank better than the host, and at what cost?

Protocol (leave-last-out by time)
---------------------------------
1. Hold-out. For every user with a rating >= 3.5 (`schema.LIKED_RATING`), the hidden movie is the
   user's last such rating by timestamp (ties: the larger movieId). Everything the user rated at or
   after that timestamp is dropped too (so nothing from the "future" stays, and no rating of the
   same second leaks the answer), and so is any earlier rating of the hidden movie itself. A user is
   evaluated when at least `min_history` (5) ratings remain before the hidden one.
2. No leakage. The host never sees the hidden ratings: the run builds a copy of the data folder,
   `<out>/work/data`, with movies.csv, links.csv, posters and item2vecEmb.csv linked to the source,
   a ratings.csv without the hidden ratings and everything after them, and a userEmb.csv recomputed
   the host's way from that reduced ratings.csv (sum of the item2vec vectors of the movies a user
   rated, divided by the number of ratings; the same direction as the mean of those vectors, so
   the host's cosine ranking is the same). A source without item2vecEmb.csv (e.g. `--from-movielens`)
   gets one trained on the copy's ratings (`train_item2vec`). The CTR sample files of sampledata/
   are not copied: they are built from all ratings. The host (`HostProcess`) then runs over the
   copy, and every model reads, trains and profiles through it (histories from the bridge, records
   and profiles in the copy's own file store, `<out>/work/store`); the run checks that no history
   the bridge returns contains its user's hidden movie.
3. Candidates ("host candidates", what users would see): the host's recall for the user through the
   bridge (source `host`: getRecList(user, 800, "emb")). The recall-stage hit rate (how often the
   hidden movie is among them) is reported on its own; a movie the host cannot load is a recall miss.
   Each plugin ranker writes its records with `run_rerank` into the copy's store, and its list is
   read back as the stage serves it, `/getrecforyou?id=N&size=K&model=M` with K the user's candidate
   count (stored order, then the host's order). The host's own rankers are read from the same URL:
   `host-emb` is model `emb`, `host-rating` a model the host does not know, i.e. its candidate order
   getMovies(800, "rating"). Movies the user already rated (in the copy) are removed from every list;
   the host's lists are also reported as served ("as-is").
4. Sampled negatives (PALR / LlamaRec protocol, a separate table, not comparable with the above):
   candidates = the hidden movie + N (`--negatives`, 99) movies drawn, seeded per user, from the movies
   the host loads that the user never rated (in the full source data). Candidates are put in the
   host's emb order (the movies outside the host's recall after, in the draw's order); plugin rankers
   rank them directly (`UserContext`s with these candidates through `run.rank_contexts`, records into
   a separate store, as the stage cannot serve them), the host's lists are restricted to them. Users
   whose hidden movie the host does not load are left out.
5. Metrics: HR@1/5/10, NDCG@5/10 and MRR per user (`metrics.METRICS`), means with 95% percentile
   bootstrap intervals over users (`bootstrap_mean`, the run's seed); the paired difference in
   NDCG@10 against host-emb (filtered), bootstrapped the same way; coverage of the loaded catalogue and
   long-tail share (outside the 20% most rated movies, counted in the copy) of the top 10. Cost: wall
   time per user (producing the records, one-off preparation such as training, and the served
   request), LLM calls and tokens per user (`RerankSummary.counters`).

Rankers compared: `host-rating`, `host-emb`, and every model of `rankers.RANKERS` (`recent`, `llm`,
`clickprompt` once registered), each after its `rankers.PREPARE_STEPS` preparation run over the copy. The
`llm` ranker uses the zhipuai backend when an API key is configured, else the configured backend
(`local` by default). Output under `--out` (default `results/eval-<date>`): results.md (the command
first), results.png, per_user.csv (the hidden movie's rank in every list), and work/ (copy, store,
host log).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import schema
from .bridge import BridgeClient, MovieMeta, UserRating
from .config import ConfigError, Settings, StoreSettings
from .host import HostProcess
from .metrics import METRICS, Interval, bootstrap_mean, coverage, long_tail_share, rank_of
from .rankers import PREPARE_STEPS, RANKERS, Ranker, UserContext, make_ranker, prepare_model
from .run import RerankSummary, rank_contexts, run_rerank, select_users
from .store import Store, open_store

__all__ = [
    "Holdout", "EvalUser", "Arm", "Scores", "Variant", "EvalOptions", "EvalResult", "EvalError",
    "HOST_MODELS", "MIN_HISTORY", "TOP_N", "available_rankers", "leave_last_out", "host_user_embeddings",
    "train_item2vec", "read_embeddings", "write_eval_copy", "build_movielens_webroot", "score_lists", "score_variant",
    "run_eval",
]

log = logging.getLogger(__name__)

# --rankers name -> the `model` value the host's /getrecforyou is asked for. "rating" is a model the
# host does not know, which keeps its candidate order: getMovies(800, "rating").
HOST_MODELS: dict[str, str] = {"host-rating": "rating", "host-emb": "emb"}
MIN_HISTORY = 5
TOP_N = 10  # the cut of coverage and long-tail share
CANDIDATES = 800  # what the host's getRecList recalls
_FILTERED = " (filtered)"
_AS_IS = " (as-is)"
BASELINE = "host-emb" + _FILTERED  # the row the paired differences are taken against
_DELTA_METRIC = "NDCG@10"
_CHART_METRICS = ("NDCG@10", "HR@10")


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


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, Interval]
    delta: Interval | None  # paired difference in NDCG@10 against the variant's baseline row
    coverage: float
    long_tail: float


@dataclass
class Arm:
    """One row of a table: what one ranker showed every user, and what that cost."""

    label: str
    backend: str
    lists: dict[int, list[int]]  # user -> movie ids in the order the user sees them
    rank_s: float | None = None  # producing every user's ranking (None: the host ranks while serving)
    prep_s: float | None = None  # one-off work before ranking (a PREPARE_STEPS step: training, profiles)
    serve_s: float | None = None  # every user's /getrecforyou request
    counters: dict[str, int] = field(default_factory=dict)
    from_store: int | None = None  # users the stage served from the store (not its host fallback)
    summary: str = ""  # the run's RerankSummary line
    scores: Scores | None = None  # filled by score_variant once every arm of the variant is in


@dataclass
class Variant:
    name: str
    title: str
    note: str
    targets: dict[int, int]  # user -> hidden movie
    arms: list[Arm]


@dataclass(frozen=True)
class EvalOptions:
    out: Path | None = None  # None: results/eval-<date>
    data: Path | None = None  # None: settings.host.data_webroot
    movielens: Path | None = None  # build the data folder from ml-latest-small instead
    users: tuple[int, ...] = ()
    sample: int | None = None
    negatives: int = 99
    rankers: tuple[str, ...] = ()  # empty: every available ranker
    min_history: int = MIN_HISTORY
    progress: bool = True
    command: str = ""  # the command line, printed at the top of results.md


@dataclass
class EvalResult:
    out: Path
    report: Path
    chart: Path
    copy: Path
    users: list[EvalUser]
    variants: list[Variant]
    wall_s: float


def available_rankers() -> list[str]:
    """The host's rankers, then every registered plugin model (read now: later registrations count)."""
    return [*HOST_MODELS, *RANKERS]


# ---- the protocol: hold-out, copy, embeddings -------------------------------------------------

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


def read_embeddings(path: Path) -> dict[int, np.ndarray]:
    """The host's `id:f1 f2 ... fN` lines."""
    vectors = {}
    for line in Path(path).read_text().splitlines():
        key, _, values = line.partition(":")
        if values.strip():
            vectors[int(key)] = np.array(values.split(), dtype=np.float64)
    return vectors


def _write_embeddings(path: Path, vectors: Mapping[int, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}:{' '.join(f'{v:.7g}' for v in vec)}\n" for key, vec in vectors.items()))


def host_user_embeddings(ratings: pd.DataFrame, item_vectors: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The host's user vectors: the sum of the item vectors of the movies a user rated, divided by
    the user's number of ratings (HOST_API.md; it matches the fixture's userEmb.csv to 1e-6). Users
    none of whose movies has a vector get none, as the host's join would drop them."""
    rated = ratings[ratings[schema.COL_MOVIE].isin(item_vectors.keys())]
    if rated.empty:
        return {}
    users, rows = np.unique(rated[schema.COL_USER].to_numpy(), return_inverse=True)
    vectors = np.stack([item_vectors[m] for m in rated[schema.COL_MOVIE]])
    sums = np.zeros((len(users), vectors.shape[1]))
    np.add.at(sums, rows, vectors)
    counts = ratings.groupby(schema.COL_USER).size()
    return {int(u): sums[i] / counts[u] for i, u in enumerate(users)}


def train_item2vec(ratings: pd.DataFrame, *, dim: int = 10, window: int = 5, negatives: int = 5,
                   epochs: int = 5, lr: float = 0.025, batch: int = 512, seed: int = 0) -> dict[int, np.ndarray]:
    """A small item2vec: skip-gram with negative sampling over each user's liked movies in time order.

    The host's own item2vec job does the same with Spark's Word2Vec (10 dims, window 5); this is
    numpy minibatch SGD, seeded, so a folder without item2vecEmb.csv still gets the host's inputs.
    Movies nobody liked get no vector (the host then ranks them last, as it does its own such movies).
    """
    liked = ratings[ratings[schema.COL_RATING] >= schema.LIKED_RATING].sort_values(
        [schema.COL_USER, schema.COL_TIMESTAMP, schema.COL_MOVIE])
    ids, tokens = np.unique(liked[schema.COL_MOVIE].to_numpy(), return_inverse=True)
    if len(ids) == 0:
        return {}
    bounds = np.flatnonzero(np.diff(liked[schema.COL_USER].to_numpy())) + 1
    centres, contexts = [], []
    for seq in np.split(tokens, bounds):
        for offset in range(1, window + 1):
            centres += [seq[:-offset], seq[offset:]]
            contexts += [seq[offset:], seq[:-offset]]
    centres, contexts = np.concatenate(centres), np.concatenate(contexts)
    noise = np.cumsum(np.bincount(tokens, minlength=len(ids)) ** 0.75)
    noise /= noise[-1]
    rng = np.random.default_rng(seed)
    w_in = (rng.random((len(ids), dim)) - 0.5) / dim
    w_out = np.zeros((len(ids), dim))
    labels = np.zeros(1 + negatives)
    labels[0] = 1.0
    steps, step = epochs * -(-len(centres) // batch), 0
    for _ in range(epochs):
        perm = rng.permutation(len(centres))
        for start in range(0, len(perm), batch):
            rate = lr * max(1e-4, 1.0 - step / steps)  # linear decay, as word2vec
            step += 1
            pick = perm[start:start + batch]
            centre = centres[pick]
            drawn = np.minimum(np.searchsorted(noise, rng.random((len(pick), negatives))), len(ids) - 1)
            targets = np.concatenate([contexts[pick][:, None], drawn], axis=1)
            v_c, v_t = w_in[centre], w_out[targets]
            grad = (labels - 1.0 / (1.0 + np.exp(-np.einsum("bd,bkd->bk", v_c, v_t)))) * rate
            np.add.at(w_out, targets, grad[..., None] * v_c[:, None, :])
            np.add.at(w_in, centre, np.einsum("bk,bkd->bd", grad, v_t))
    return {int(m): w_in[i] for i, m in enumerate(ids)}


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve())


def write_eval_copy(source: Path, dest: Path, *, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, Holdout]]:
    """The copy of `source` the host and every model see (docstring, step 2), written to `dest` (replaced).

    Returns the source's ratings, the copy's ratings and the hold-outs.
    """
    missing = [rel for rel in (schema.MOVIES_CSV, schema.LINKS_CSV, schema.RATINGS_CSV) if not (source / rel).is_file()]
    if missing:
        raise ConfigError(f"{source} is not a SparrowRecsys data folder: missing {', '.join(missing)}")
    if dest.exists():
        shutil.rmtree(dest)
    ratings = pd.read_csv(source / schema.RATINGS_CSV)
    reduced, holdouts = leave_last_out(ratings)
    for rel in (schema.MOVIES_CSV, schema.LINKS_CSV):
        _link(dest / rel, source / rel)
    if (source / "posters").is_dir():
        _link(dest / "posters", source / "posters")
    else:
        (dest / "posters").mkdir(parents=True)
    reduced.to_csv(dest / schema.RATINGS_CSV, index=False)
    item_emb = source / schema.ITEM_EMB_CSV
    if item_emb.is_file():
        _link(dest / schema.ITEM_EMB_CSV, item_emb)
        vectors = read_embeddings(item_emb)
    else:
        log.info("%s has no %s: training item2vec on the copy's ratings", source, schema.ITEM_EMB_CSV)
        vectors = train_item2vec(reduced, seed=seed)
        _write_embeddings(dest / schema.ITEM_EMB_CSV, vectors)
    _write_embeddings(dest / schema.USER_EMB_CSV, host_user_embeddings(reduced, vectors))
    return ratings, reduced, holdouts


def build_movielens_webroot(movielens: Path, dest: Path) -> Path:
    """A host-layout folder from MovieLens (ml-latest-small): movies, links, ratings as they are,
    an empty posters/; no item2vecEmb.csv, so `write_eval_copy` trains one on the copy's ratings
    (training it here, on every rating, would leak the hidden ones into the embeddings)."""
    names = {schema.MOVIES_CSV: "movies.csv", schema.LINKS_CSV: "links.csv", schema.RATINGS_CSV: "ratings.csv"}
    missing = [n for n in names.values() if not (movielens / n).is_file()]
    if missing:
        raise ConfigError(f"{movielens} is not a MovieLens folder: missing {', '.join(missing)}")
    if dest.exists():
        shutil.rmtree(dest)
    for rel, name in names.items():
        _link(dest / rel, movielens / name)
    (dest / "posters").mkdir(parents=True)
    return dest


# ---- metrics -----------------------------------------------------------------------------------

def _values(lists: Mapping[int, Sequence[int]], targets: Mapping[int, int], metric: str) -> np.ndarray:
    fn = METRICS[metric]
    return np.array([fn(lists[u], targets[u]) for u in sorted(targets)], dtype=np.float64)


def score_lists(lists: Mapping[int, Sequence[int]], targets: Mapping[int, int], *, seed: int = 0) -> dict[str, Interval]:
    """Every metric of `METRICS`, mean over the users of `targets` with a bootstrap interval."""
    return {name: bootstrap_mean(_values(lists, targets, name), seed=seed) for name in METRICS}


def _without(ids: Iterable[int], rated: set[int]) -> list[int]:
    return [m for m in ids if m not in rated]


# ---- reading what the stage serves -------------------------------------------------------------

def _served(base_url: str, model: str, users: Sequence[EvalUser], progress: bool) -> tuple[dict[int, list[int]], float, int]:
    """Each user's list from /getrecforyou (size = the user's candidate count), the time the
    requests took, and how many came from the store (the stage's `X-Sparrow-LLM` header)."""
    lists, seconds, from_store = {}, 0.0, 0
    for user in tqdm(users, desc=f"serve {model}", unit="user", disable=not progress):
        url = f"{base_url}/getrecforyou?id={user.user_id}&size={len(user.candidate_ids)}&model={model}"
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as resp:
            body = resp.read()
            source = resp.headers.get("X-Sparrow-LLM", "")
        seconds += time.perf_counter() - started
        from_store += source.endswith("source=store")
        lists[user.user_id] = [int(m["movieId"]) for m in json.loads(body)]
    return lists, seconds, from_store


# ---- the run -----------------------------------------------------------------------------------

def _copy_settings(settings: Settings, work: Path) -> Settings:
    """The stand-in host over the copy on free ports, with its own connect file and a file store in
    `work`. Never a real checkout (SPARROW_HOME): it reads its own web root, hidden ratings included;
    never the configured store: an eval must not overwrite served records."""
    return settings.replace(
        host={"data_dir": work / "data", "work_dir": work / "host", "http_port": 0, "sparrow_home": None},
        bridge={"connect_file": work / "gateway.json", "gateway_port": 0, "token": None},
        store={"kind": "file", "dir": work / "store"},
    )


def _ranker_settings(settings: Settings) -> Settings:
    # The brief: the llm ranker asks zhipuai whenever a key is configured, else the configured backend.
    return settings.replace(llm={"backend": "zhipuai"}) if settings.llm.api_key else settings


def _eval_users(client: BridgeClient, holdouts: Mapping[int, Holdout], chosen: Sequence[int],
                batch: int) -> list[EvalUser]:
    users = []
    for start in range(0, len(chosen), batch):
        bundles, _ = client.user_bundles(chosen[start:start + batch], "host", CANDIDATES, False)
        for b in bundles:
            holdout = holdouts[b.user_id]
            leaked = [r for r in b.ratings if r.movie_id == holdout.movie_id or r.timestamp >= holdout.timestamp]
            if leaked:
                raise EvalError(f"protocol broken: the host's history of user {b.user_id} holds {leaked[:3]} "
                                f"(hidden movie {holdout.movie_id} at {holdout.timestamp})")
            users.append(EvalUser(holdout, b.ratings, b.candidate_ids))
    return users


def _host_arms(lists: Mapping[str, dict[int, list[int]]], users: Sequence[EvalUser],
               timing: Mapping[str, float]) -> list[Arm]:
    arms = []
    for name, served in lists.items():
        arms.append(Arm(name + _AS_IS, "host", served, serve_s=timing[name]))
        arms.append(Arm(name + _FILTERED, "host", {u.user_id: _without(served[u.user_id], u.rated_ids) for u in users},
                        serve_s=timing[name]))
    return arms


def _plugin_arm(name: str, settings: Settings, client: BridgeClient, store: Store, base_url: str,
                users: Sequence[EvalUser], progress: bool) -> tuple[Arm, Ranker]:
    """Prepare (over the copy), write records with run_rerank, read back what the stage serves."""
    started = time.perf_counter()
    prepare_model(name, settings, progress=progress)
    prep_s = time.perf_counter() - started if name in PREPARE_STEPS else None
    ranker = make_ranker(name, settings, store)
    summary = run_rerank(settings, name, users=[u.user_id for u in users], client=client, store=store,
                         ranker=ranker, progress=progress)
    served, serve_s, from_store = _served(base_url, name, users, progress)
    lists = {u.user_id: _without(served[u.user_id], u.rated_ids) for u in users}
    return Arm(name, ranker.backend, lists, rank_s=summary.wall_s, prep_s=prep_s, serve_s=serve_s,
               counters=dict(summary.counters), from_store=from_store, summary=summary.line()), ranker


def _then_rest(first: Iterable[int], rest: Sequence[int]) -> list[int]:
    """`first` in its order, then the rest of `rest` in its order (how the stage fills a list)."""
    head = list(dict.fromkeys(first))
    seen = set(head)
    return head + [m for m in rest if m not in seen]


def _sampled_candidates(user: EvalUser, never_rated: np.ndarray, negatives: int, seed: int) -> list[int]:
    """The hidden movie and `negatives` movies the user never rated, in the host's recall order,
    then (outside the recall) in the order drawn. Seeded per user: a user's candidates do not
    depend on which other users are evaluated."""
    rng = np.random.default_rng([seed, user.user_id])
    drawn = [int(m) for m in rng.choice(never_rated, size=min(negatives, len(never_rated)), replace=False)]
    mixed = [user.holdout.movie_id, *drawn]
    rng.shuffle(mixed)
    pool = set(mixed)
    return _then_rest((m for m in user.candidate_ids if m in pool), mixed)


def _rank_sampled(ranker: Ranker, contexts: Sequence[UserContext], store: Store, batch: int,
                  progress: bool) -> tuple[dict[int, list[int]], RerankSummary]:
    """Rank as `run_rerank` does (records into `store`, failures counted), then read each record back
    and fill it up with the rest of the candidates, as the stage fills a record with the host's order."""
    summary = RerankSummary(model=ranker.name)
    started = time.perf_counter()
    with tqdm(total=len(contexts), desc=f"rank {ranker.name} (sampled)", unit="user", disable=not progress) as bar:
        for start in range(0, len(contexts), batch):
            chunk = list(contexts[start:start + batch])
            rank_contexts(ranker, chunk, store, summary)
            summary.users += len(chunk)
            bar.update(len(chunk))
    summary.wall_s = time.perf_counter() - started
    lists = {}
    for ctx in contexts:
        record = store.get_record(ranker.name, ctx.user_id)
        lists[ctx.user_id] = _then_rest(record.movie_ids if record else (), ctx.candidate_ids)
    return lists, summary


def _sampled_variant(users: Sequence[EvalUser], source_ratings: pd.DataFrame, catalogue: Mapping[int, MovieMeta],
                     host_lists: Mapping[str, dict[int, list[int]]], rankers: Sequence[Ranker], store: Store,
                     sampled_store: Store, negatives: int, seed: int, batch: int, progress: bool) -> Variant:
    rated_ever = source_ratings.groupby(schema.COL_USER)[schema.COL_MOVIE].agg(set)
    loaded = np.array(sorted(catalogue))
    kept = [u for u in users if u.holdout.movie_id in catalogue]
    candidates = {u.user_id: _sampled_candidates(u, loaded[~np.isin(loaded, list(rated_ever[u.user_id]))],
                                                 negatives, seed) for u in kept}
    pools = {u: set(c) for u, c in candidates.items()}
    arms = [Arm(name, "host", {u: _then_rest((m for m in served[u] if m in pools[u]), candidates[u])
                               for u in candidates})
            for name, served in host_lists.items()]
    for ranker in rankers:
        contexts = [UserContext(u.user_id, u.ratings, tuple(candidates[u.user_id]), catalogue,
                                store.get_profile(u.user_id)) for u in kept]
        lists, summary = _rank_sampled(ranker, contexts, sampled_store, batch, progress)
        arms.append(Arm(ranker.name, ranker.backend, lists, rank_s=summary.wall_s, counters=dict(summary.counters),
                        summary=summary.line()))
    left_out = len(users) - len(kept)
    return Variant(
        "sampled", f"Sampled negatives (hidden + {negatives}, PALR/LlamaRec protocol)",
        f"Candidates: the hidden movie and {negatives} movies the user never rated, drawn from the movies the "
        f"host loads; not comparable with the table above. {left_out} of {len(users)} users are left out "
        f"because the host does not load their hidden movie.",
        {u.user_id: u.holdout.movie_id for u in kept}, arms)


def run_eval(settings: Settings, options: EvalOptions = EvalOptions()) -> EvalResult:
    """The whole protocol of the module docstring; writes results.md, results.png and per_user.csv."""
    started = time.perf_counter()
    names = list(options.rankers) or available_rankers()
    unknown = [n for n in names if n not in available_rankers()]
    if unknown:
        raise ConfigError(f"unknown ranker(s) {', '.join(unknown)}; known: {', '.join(available_rankers())}")
    if options.negatives < 0:
        raise ConfigError(f"--negatives must be >= 0, got {options.negatives}")
    # Absolute: the host's web root links into the copy, and a relative link target would dangle.
    out = (options.out or Path("results") / f"eval-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)  # records or a copy of an earlier run must not be served in this one
    source = options.data or settings.host.data_webroot
    if options.movielens is not None:
        source = build_movielens_webroot(options.movielens, work / "movielens")
    copy_settings = _copy_settings(settings, work)
    source_ratings, reduced, holdouts = write_eval_copy(source, work / "data", seed=settings.seed)
    plugins = [n for n in names if n not in HOST_MODELS]
    # Declared plugin models: a user without a record gets the stage's host fallback, as in production.
    extra_env = {"SPARROW_LLM_MODELS": ",".join(plugins)} if plugins else {}
    with HostProcess(copy_settings, extra_env=extra_env, log_path=work / "host.log") as host, \
            BridgeClient(copy_settings.bridge) as client:
        store = open_store(copy_settings.store)
        known = set(client.user_ids())
        eligible = sorted(u for u, h in holdouts.items() if h.history_size >= options.min_history and u in known)
        asked = select_users(eligible, options.users, options.sample, settings.seed)
        chosen = sorted(set(asked) & set(eligible))
        if not chosen:
            raise ConfigError(f"no eligible user to evaluate (eligible: {len(eligible)}; asked for {options.users or 'all'})")
        batch = max(1, settings.bridge.batch_users)
        users = _eval_users(client, holdouts, chosen, batch)
        catalogue, _ = client.movies(pd.read_csv(source / schema.MOVIES_CSV, usecols=[schema.COL_MOVIE])[
            schema.COL_MOVIE].tolist(), True)
        host_lists, timing = {}, {}
        for name in (n for n in names if n in HOST_MODELS):
            host_lists[name], timing[name], _ = _served(host.base_url, HOST_MODELS[name], users, options.progress)
        arms = _host_arms(host_lists, users, timing)
        rankers = []
        ranker_settings = _ranker_settings(copy_settings)
        for name in plugins:
            arm, ranker = _plugin_arm(name, ranker_settings, client, store, host.base_url, users, options.progress)
            arms.append(arm)
            rankers.append(ranker)
        recalled = [u.holdout.movie_id in u.candidate_ids for u in users]
        main = Variant(
            "host", "Host candidates (what users would see)",
            f"Recall-stage hit rate (the hidden movie among the host's {max(len(u.candidate_ids) for u in users)} "
            f"candidates): {bootstrap_mean(recalled, seed=settings.seed)}. Lists are read from /getrecforyou.",
            {u.user_id: u.holdout.movie_id for u in users}, arms)
        variants = [main]
        if options.negatives:
            # Its own store: the sampled lists must not replace the records the stage served above.
            sampled_store = open_store(StoreSettings(kind="file", dir=work / "store-sampled"))
            variants.append(_sampled_variant(users, source_ratings, catalogue, host_lists, rankers, store,
                                             sampled_store, options.negatives, settings.seed, batch, options.progress))
    wall_s = time.perf_counter() - started
    popularity = {m: meta.rating_number for m, meta in catalogue.items()}
    facts = {
        "data": f"{source} ({'built from ' + str(options.movielens) if options.movielens else 'as given'}); "
                f"copy {work / 'data'}",
        "users": f"{len(holdouts)} with a liked rating, {len(eligible)} eligible (>= {options.min_history} "
                 f"earlier ratings, known to the host), {len(users)} evaluated"
                 + (f"; asked for but not eligible: {sorted(set(asked) - set(chosen))}" if len(asked) > len(chosen)
                    else ""),
        "ratings": f"{len(source_ratings)} in the source, {len(reduced)} in the copy",
        "seed": str(settings.seed),
        "llm backend": ranker_settings.llm.backend,
        "wall time": f"{wall_s:.1f} s",
    }
    for variant in variants:
        score_variant(variant, popularity, len(catalogue), settings.seed)
    report, chart = out / "results.md", out / "results.png"
    _write_report(report, chart, options.command, facts, variants)
    _plot(chart, variants)
    _write_per_user(out / "per_user.csv", variants)
    return EvalResult(out, report, chart, work / "data", users, variants, wall_s)


# ---- output ------------------------------------------------------------------------------------

def _per_user_cost(total: float | None, n: int, scale: float = 1000.0) -> str:
    return "–" if total is None or not n else f"{total / n * scale:.1f}"


def _counter(arm: Arm, n: int, *keys: str) -> str:
    if not any(k in arm.counters for k in keys):
        return "–"
    return f"{sum(arm.counters.get(k, 0) for k in keys) / n:.1f}"


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _baseline(variant: Variant) -> Arm | None:
    """host-emb as the user would see it without rated movies (in the sampled variant, nothing is rated)."""
    return next((a for a in variant.arms if a.label in (BASELINE, "host-emb")), None)


def score_variant(variant: Variant, popularity: Mapping[int, int], catalogue_size: int, seed: int) -> None:
    """Fill every arm's `scores` (the paired differences need the baseline's per-user values)."""
    users = sorted(variant.targets)
    baseline = _baseline(variant)
    base_values = None if baseline is None else _values(baseline.lists, variant.targets, _DELTA_METRIC)
    for arm in variant.arms:
        delta = None if baseline is None or arm is baseline else bootstrap_mean(
            _values(arm.lists, variant.targets, _DELTA_METRIC) - base_values, seed=seed)
        tops = [arm.lists[u][:TOP_N] for u in users]
        arm.scores = Scores(score_lists(arm.lists, variant.targets, seed=seed), delta,
                            coverage(tops, catalogue_size), long_tail_share(tops, popularity))


def _variant_tables(variant: Variant) -> str:
    n = len(variant.targets)
    baseline = _baseline(variant)
    quality = [[arm.label, *(str(arm.scores.metrics[m]) for m in METRICS),
                "–" if arm.scores.delta is None else str(arm.scores.delta),
                f"{arm.scores.coverage:.3f}", f"{arm.scores.long_tail:.3f}"] for arm in variant.arms]
    cost = [[arm.label, arm.backend, "–" if arm.prep_s is None else f"{arm.prep_s:.1f}",
             _per_user_cost(arm.rank_s, n), _per_user_cost(arm.serve_s, n),
             _counter(arm, n, "llm_calls"), _counter(arm, n, "prompt_tokens", "completion_tokens"),
             "–" if arm.from_store is None else f"{arm.from_store}/{n}"]
            for arm in variant.arms]
    parts = [f"## {variant.title}", "", f"{n} users. {variant.note}", "",
             _markdown_table(["ranker", *METRICS, f"Δ{_DELTA_METRIC} vs {baseline.label if baseline else BASELINE}", f"coverage@{TOP_N}",
                              f"long-tail@{TOP_N}"], quality),
             "", _markdown_table(["ranker", "backend", "prep s", "rank ms/user", "serve ms/user", "LLM calls/user",
                                  "tokens/user", "served from store"], cost)]
    summaries = [a.summary for a in variant.arms if a.summary]
    if summaries:
        parts += ["", *(f"- {s}" for s in summaries)]
    return "\n".join(parts)


def _write_report(path: Path, chart: Path, command: str, facts: Mapping[str, str], variants: Sequence[Variant]) -> None:
    lines = [f"# sparrow-llm eval, {datetime.now():%Y-%m-%d %H:%M}", "", f"Command: `{command or 'run_eval(...)'}`", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += ["", "Leave-last-out by time (protocol: `sparrow_llm/evaluation.py`). Means with 95% bootstrap "
              "intervals over users; rated movies removed from every list except the host's as-is rows; Δ is "
              "the paired per-user difference against host-emb; costs are per evaluated user.", ""]
    lines += [part for variant in variants for part in (_variant_tables(variant), "")]
    lines += [f"![{', '.join(_CHART_METRICS)} per ranker]({chart.name})", ""]
    path.write_text("\n".join(lines))


def _plot(path: Path, variants: Sequence[Variant]) -> None:
    from matplotlib.figure import Figure  # a Figure with its own Agg canvas: no global backend state

    fig = Figure(figsize=(6 * len(_CHART_METRICS), 0.45 * sum(len(v.arms) for v in variants) + 1.5),
                 layout="constrained")
    axes = fig.subplots(len(variants), len(_CHART_METRICS), squeeze=False)
    for row, variant in zip(axes, variants):
        labels = [a.label for a in variant.arms]
        for ax, metric in zip(row, _CHART_METRICS):
            scores = [a.scores.metrics[metric] for a in variant.arms]
            means = np.array([s.mean for s in scores])
            errors = np.array([[s.mean - s.low for s in scores], [s.high - s.mean for s in scores]])
            ax.barh(labels, means, xerr=errors, capsize=3, color="tab:blue")
            ax.invert_yaxis()
            ax.set_xlabel(f"{metric}, 95% bootstrap interval")
            ax.set_title(variant.title, fontsize=9)
    fig.savefig(path, dpi=110)


def _write_per_user(path: Path, variants: Sequence[Variant]) -> None:
    rows = [(v.name, a.label, u, t, rank_of(a.lists[u], t))
            for v in variants for a in v.arms for u, t in sorted(v.targets.items())]
    pd.DataFrame(rows, columns=["variant", "ranker", schema.COL_USER, schema.COL_MOVIE, "rank"]).astype(
        {"rank": "Int64"}).to_csv(path, index=False)
