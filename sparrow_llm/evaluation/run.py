"""`sparrow-llm eval`: does each rerank stage rank better than the host, and at what cost?

Protocol (leave-last-out by time)
---------------------------------
1. Hold-out. For every user with a rating >= 3.5 (`schema.LIKED_RATING`), the hidden movie is the
   user's last such rating by timestamp (ties: the larger movieId). Everything the user rated at or
   after that timestamp is dropped too (so nothing from the "future" stays, and no rating of the
   same second leaks the answer), and so is any earlier rating of the hidden movie itself. A user is
   eligible when at least `min_history` (5) ratings remain before the hidden one; `--users` or `--sample`
   choose among the eligible users (default: all of them).
   Cold start (`--history N`): each evaluated user then keeps only the last N of those ratings (by timestamp,
   then movieId) in the copy; eligibility is decided on the full history before the cut, and every other
   user's ratings stay as they are (every model still trains on them). The host, every model and a
   reranker's base see only those N ratings of an evaluated user, and userEmb.csv (step 2) is computed from
   the cut ratings.
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
   rank them directly (`UserContext`s with these candidates through `rerank.rank_contexts`, records into
   a separate store, as the stage cannot serve them; a reranker reranks its base's top K of them; the
   catalogue rankers' lists are cut to them), the host's lists are restricted to them. Users whose hidden
   movie the host does not load are left out.
5. Metrics: HR@1/5/10, NDCG@5/10 and MRR per user (`metrics.METRICS`), means with 95% percentile
   bootstrap intervals over users (`bootstrap_mean`, the run's seed); the paired difference in
   NDCG@10 against host-emb (filtered), bootstrapped the same way, for a reranker (a ranker with a
   `base`) against the base it reranks, and for a ranker of `registry.ABLATIONS` against the ranker it ablates
   (the same stage without the LLM's features); coverage of the loaded catalogue and long-tail share (outside the
   20% most rated movies, counted in the copy) of the top 10. Cost: wall time per user (producing the
   records and the served request), the one-off preparation such as training (seconds and the peak
   resident memory of this process meanwhile, `meter.measure`), LLM calls and tokens per user
   (`RerankSummary.counters`).
6. Segments (`segments.py`), a second table under each variant's: users by history length (the ratings before
   the hidden one in the copy: <= 20, 21-100, > 100) and by the hidden movie's popularity (head: among the 20%
   most rated movies of the copy, the long-tail share's head; tail: the rest). Per segment: its users, each
   ranker's NDCG@10 and its paired differences against its base and its ablation; per_user.csv carries each
   user's segments.

Rankers compared: `host-rating`, `host-emb`, and every model of `registry.RANKERS` (or those of `--rankers`),
always with the `popularity` and `ease` baselines (`BASELINES`), the base of every reranker and the ablation of
every ranker of `registry.ABLATIONS`, each after its `registry.PREPARE_STEPS` preparation run over the copy. The
`llm` ranker uses the zhipuai backend when an API key is configured, else the configured backend
(`local` by default). Output under `--out` (default `results/eval-<date>`): results.md (the command
first), results.png, per_user.csv (the hidden movie's rank in every list, the user's segments), and work/
(copy, store, host log).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from .. import schema
from ..bridge.client import BridgeClient
from ..bridge.host import HostProcess
from ..config import ConfigError, Settings, StoreSettings
from ..domain import MovieMeta
from ..meter import measure
from ..metrics import bootstrap_mean
from ..pipeline.rerank import run_rerank
from ..rankers.base import Ranker
from ..registry import ABLATIONS, PREPARE_STEPS, base_of, make_ranker, prepare_model, ranker_names
from ..schema import HOST_CANDIDATES
from ..store import Store, open_default_store, open_store
from .datacopy import build_movielens_webroot, write_eval_copy
from .protocol import MIN_HISTORY, EvalError, EvalUser, Holdout, without
from .report import AS_IS, FILTERED, Arm, Variant, plot, score_variant, write_per_user, write_report
from .segments import assign_segments
from .sampled import sampled_variant
from .serving import served_lists

__all__ = ["EvalOptions", "EvalResult", "HOST_MODELS", "BASELINES", "available_rankers", "run_eval"]

# --rankers name -> the `model` value the host's /getrecforyou is asked for. "rating" is a model the
# host does not know, which keeps its candidate order: getMovies(800, "rating").
HOST_MODELS: dict[str, str] = {"host-rating": "rating", "host-emb": "emb"}
# In every run, on the same copy: the floor every recommender evaluation carries.
BASELINES = ("popularity", "ease")


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
    history: int | None = None  # cold start: each evaluated user's last N ratings before the hidden one
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
    return [*HOST_MODELS, *ranker_names()]


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
    # The eval measures the order, which the model's reasons never change: none are written (a call per user).
    # The brief: the llm ranker asks zhipuai whenever a key is configured, else the configured backend.
    return settings.replace(llm={"reasons": 0, **({"backend": "zhipuai"} if settings.llm.api_key else {})})


def _eval_users(client: BridgeClient, holdouts: Mapping[int, Holdout], chosen: Sequence[int],
                batch: int) -> list[EvalUser]:
    users = []
    for start in range(0, len(chosen), batch):
        bundles, _ = client.user_bundles(chosen[start:start + batch], "host", HOST_CANDIDATES, False)
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
        arms.append(Arm(name + AS_IS, "host", served, serve_s=timing[name]))
        arms.append(Arm(name + FILTERED, "host", {u.user_id: without(served[u.user_id], u.rated_ids) for u in users},
                        serve_s=timing[name]))
    return arms


def _plugin_arm(name: str, settings: Settings, client: BridgeClient, store: Store, base_url: str,
                users: Sequence[EvalUser], progress: bool) -> tuple[Arm, Ranker]:
    """Prepare (over the copy), write records with run_rerank, read back what the stage serves."""
    with measure() as prep:
        prepare_model(name, settings, progress=progress)
    prepared = name in PREPARE_STEPS
    ranker = make_ranker(name, settings, store)
    try:
        summary = run_rerank(settings, name, users=[u.user_id for u in users], client=client, store=store,
                             ranker=ranker, progress=progress)
    except BaseException:
        ranker.close()
        raise
    served, serve_s, from_store = served_lists(base_url, name, users, progress, settings.host.http_timeout_s)
    lists = {u.user_id: without(served[u.user_id], u.rated_ids) for u in users}
    return Arm(name, ranker.backend, lists, rank_s=summary.wall_s, prep_s=prep.seconds if prepared else None,
               prep_memory=prep if prepared else None, serve_s=serve_s, counters=dict(summary.counters),
               from_store=from_store, summary=summary.line(), base=base_of(name, settings),
               ablated=ABLATIONS.get(name)), ranker


def _variants(users: Sequence[EvalUser], arms: list[Arm], plugin_arms: Sequence[Arm], source_ratings: pd.DataFrame,
              catalogue: Mapping[int, MovieMeta], host_lists: Mapping[str, dict[int, list[int]]],
              rankers: Sequence[Ranker], store: Store, work: Path, options: EvalOptions, seed: int,
              batch: int) -> list[Variant]:
    """The main table (host candidates, lists as served) and, with negatives, the sampled-negatives table
    (`plugin_arms`: the main table's arms of `rankers`, in their order)."""
    recalled = [u.holdout.movie_id in u.candidate_ids for u in users]
    main = Variant(
        "host", "Host candidates (what users would see)",
        f"Recall-stage hit rate (the hidden movie among the host's {max(len(u.candidate_ids) for u in users)} "
        f"candidates): {bootstrap_mean(recalled, seed=seed)}. Lists are read from /getrecforyou.",
        {u.user_id: u.holdout.movie_id for u in users}, arms)
    if not options.negatives:
        return [main]
    # Its own store: the sampled lists must not replace the records the stage served above.
    sampled_store = open_store(StoreSettings(kind="file", dir=work / "store-sampled"))
    return [main, sampled_variant(users, source_ratings, catalogue, host_lists, rankers, plugin_arms, store,
                                  sampled_store, options.negatives, seed, batch, options.progress)]


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
    copy = write_eval_copy(source, work / "data", seed=settings.seed, min_history=options.min_history,
                           users=options.users, sample=options.sample, history=options.history)
    plugins = [*(b for b in BASELINES if b not in names), *(n for n in names if n not in HOST_MODELS)]
    # Every registered model declared (a reranker's base joins later): a user without a record gets the
    # stage's host fallback, as in production.
    extra_env = {"SPARROW_LLM_MODELS": ",".join(ranker_names())}
    with HostProcess(copy_settings, extra_env=extra_env, log_path=work / "host.log") as host, \
            BridgeClient(copy_settings.bridge) as client:
        store = open_default_store(copy_settings)
        unknown = sorted(set(copy.evaluated) - set(client.user_ids()))
        if unknown:
            raise EvalError(f"protocol broken: the host over the copy does not know users {unknown[:5]}")
        batch = max(1, settings.bridge.batch_users)
        users = _eval_users(client, copy.holdouts, copy.evaluated, batch)
        catalogue, _ = client.movies(pd.read_csv(source / schema.MOVIES_CSV, usecols=[schema.COL_MOVIE])[
            schema.COL_MOVIE].tolist(), True)
        host_lists, timing = {}, {}
        for name in (n for n in names if n in HOST_MODELS):
            host_lists[name], timing[name], _ = served_lists(host.base_url, HOST_MODELS[name], users, options.progress,
                                                             settings.host.http_timeout_s)
        arms = _host_arms(host_lists, users, timing)
        rankers: list[Ranker] = []
        plugin_arms: list[Arm] = []
        try:
            for name in plugins:  # grows while it runs: a reranker's base and a ranker's ablation join it
                arm, ranker = _plugin_arm(name, _ranker_settings(copy_settings), client, store, host.base_url, users,
                                          options.progress)
                plugin_arms.append(arm)
                rankers.append(ranker)
                plugins += [n for n in dict.fromkeys((arm.base, arm.ablated)) if n is not None and n not in plugins]
            arms += plugin_arms
            variants = _variants(users, arms, plugin_arms, copy.source_ratings, catalogue, host_lists, rankers, store,
                                 work, options, settings.seed, batch)
        finally:
            for ranker in rankers:
                ranker.close()
    wall_s = time.perf_counter() - started
    popularity = {m: meta.rating_number for m, meta in catalogue.items()}
    facts = {
        "data": f"{source} ({'built from ' + str(options.movielens) if options.movielens else 'as given'}); "
                f"copy {work / 'data'}",
        "users": f"{len(copy.holdouts)} with a liked rating, {len(copy.eligible)} eligible (>= "
                 f"{max(1, options.min_history)} earlier ratings), {len(users)} evaluated"
                 + (f"; asked for but not eligible: {sorted(set(copy.asked) - set(copy.evaluated))}"
                    if len(copy.asked) > len(copy.evaluated) else ""),
        "ratings": f"{len(copy.source_ratings)} in the source, {len(copy.ratings)} in the copy"
                   + (f" (cold start: each evaluated user's last {options.history} before the hidden one)"
                      if options.history is not None else ""),
        "seed": str(settings.seed),
        "llm backend": _ranker_settings(copy_settings).llm.backend,
        "wall time": f"{wall_s:.1f} s",
    }
    segments = assign_segments({u.user_id: u.holdout.history_size for u in users},
                               {u.user_id: u.holdout.movie_id for u in users}, popularity)
    for variant in variants:
        variant.segments = {u: segments[u] for u in variant.targets}
        score_variant(variant, popularity, len(catalogue), settings.seed)
    report, chart = out / "results.md", out / "results.png"
    write_report(report, chart, options.command, facts, variants)
    plot(chart, variants)
    write_per_user(out / "per_user.csv", variants)
    return EvalResult(out, report, chart, work / "data", users, variants, wall_s)
