"""Scores of every arm and the report: results.md, results.png, per_user.csv."""
from __future__ import annotations

from dataclasses import astuple, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import schema
from ..meter import Cost
from ..metrics import METRICS, Interval, bootstrap_difference, bootstrap_mean, coverage, long_tail_share, rank_of
from .protocol import TOP_N
from .segments import Segment, segment_groups

__all__ = ["Scores", "Arm", "Variant", "score_lists", "score_variant", "write_report", "plot", "write_per_user",
           "BASELINE", "FILTERED", "AS_IS"]

FILTERED = " (filtered)"
AS_IS = " (as-is)"
BASELINE = "host-emb" + FILTERED  # the row the paired differences are taken against
_DELTA_METRIC = "NDCG@10"
_CHART_METRICS = ("NDCG@10", "HR@10")


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, Interval]
    delta: Interval | None  # paired difference in NDCG@10 against the variant's baseline row
    base_delta: Interval | None  # the same against the row of the base a reranker reranks
    ablation_delta: Interval | None  # the same against the row of the ranker it ablates (registry.ABLATIONS)
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
    prep_memory: Cost | None = None  # that step's peak resident memory
    serve_s: float | None = None  # every user's /getrecforyou request
    counters: dict[str, int] = field(default_factory=dict)
    from_store: int | None = None  # users the stage served from the store (not its host fallback)
    summary: str = ""  # the run's RerankSummary line
    base: str | None = None  # a reranker's base ranker (the label of its row)
    ablated: str | None = None  # the ranker this one is without its LLM features (registry.ABLATIONS)
    scores: Scores | None = None  # filled by score_variant once every arm of the variant is in
    segment_scores: dict[str, Scores] = field(default_factory=dict)  # the same per non-empty segment


@dataclass
class Variant:
    name: str
    title: str
    note: str
    targets: dict[int, int]  # user -> hidden movie
    arms: list[Arm]
    segments: dict[int, Segment] = field(default_factory=dict)  # user -> segments (none: no segment table)


def _values(lists: Mapping[int, Sequence[int]], targets: Mapping[int, int], metric: str) -> np.ndarray:
    fn = METRICS[metric]
    return np.array([fn(lists[u], targets[u]) for u in sorted(targets)], dtype=np.float64)


def score_lists(lists: Mapping[int, Sequence[int]], targets: Mapping[int, int], *, seed: int = 0) -> dict[str, Interval]:
    """Every metric of `METRICS`, mean over the users of `targets` with a bootstrap interval."""
    return {name: bootstrap_mean(_values(lists, targets, name), seed=seed) for name in METRICS}


def _per_user_cost(total: float | None, n: int, scale: float = 1000.0) -> str:
    return "–" if total is None or not n else f"{total / n * scale:.1f}"


def _counter(arm: Arm, n: int, *keys: str) -> str:
    if not any(k in arm.counters for k in keys):
        return "–"
    return f"{sum(arm.counters.get(k, 0) for k in keys) / n:.1f}"


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    return pd.DataFrame(list(rows), columns=list(header)).to_markdown(index=False, disable_numparse=True)


def _baseline(variant: Variant) -> Arm | None:
    """host-emb as the user would see it without rated movies (in the sampled variant, nothing is rated)."""
    return next((a for a in variant.arms if a.label in (BASELINE, "host-emb")), None)


def _score_arms(arms: Sequence[Arm], targets: Mapping[int, int], baseline: Arm | None,
                popularity: Mapping[int, int], catalogue_size: int, seed: int) -> list[Scores]:
    """Each arm's Scores over the users of `targets` (the paired differences need the other rows' per-user values)."""
    users = sorted(targets)
    values = {arm.label: _values(arm.lists, targets, _DELTA_METRIC) for arm in arms}

    def paired(arm: Arm, other: Arm | str | None) -> Interval | None:
        label = other.label if isinstance(other, Arm) else other
        if label is None or label == arm.label or label not in values:
            return None
        return bootstrap_difference(values[arm.label], values[label], seed=seed)

    scores = []
    for arm in arms:
        tops = [arm.lists[u][:TOP_N] for u in users]
        scores.append(Scores(score_lists(arm.lists, targets, seed=seed), paired(arm, baseline), paired(arm, arm.base),
                             paired(arm, arm.ablated), coverage(tops, catalogue_size),
                             long_tail_share(tops, popularity)))
    return scores


def score_variant(variant: Variant, popularity: Mapping[int, int], catalogue_size: int, seed: int) -> None:
    """Fill every arm's `scores` over all the variant's users, and its `segment_scores` over each non-empty segment."""
    baseline = _baseline(variant)
    for arm, scores in zip(variant.arms, _score_arms(variant.arms, variant.targets, baseline, popularity,
                                                     catalogue_size, seed)):
        arm.scores = scores
    for label, users in _segment_users(variant).items():
        if users:
            targets = {u: variant.targets[u] for u in users}
            for arm, scores in zip(variant.arms, _score_arms(variant.arms, targets, baseline, popularity,
                                                             catalogue_size, seed)):
                arm.segment_scores[label] = scores


def _segment_users(variant: Variant) -> dict[str, list[int]]:
    """Each segment -> its users among the variant's (the sampled table leaves some out)."""
    return {label: [u for u in users if u in variant.targets]
            for label, users in segment_groups(variant.segments).items()} if variant.segments else {}


def _pairing_header(ablation: bool) -> list[str]:
    """The columns of a reranker's gain over its base and, when some row has one, a ranker's over its ablation."""
    return [f"Δ{_DELTA_METRIC} vs its base", *([f"Δ{_DELTA_METRIC} vs its ablation"] if ablation else [])]


def _pairing_cells(arm: Arm, scores: Scores, ablation: bool) -> list[str]:
    pairs = [(scores.base_delta, arm.base), *([(scores.ablation_delta, arm.ablated)] if ablation else [])]
    return ["–" if delta is None else f"{delta} vs {other}" for delta, other in pairs]


def _segment_table(variant: Variant, ablation: bool) -> list[str]:
    """The segments' rows (segment, users, ranker, NDCG@10, Δ vs its base, and with `ablation` vs its ablation)."""
    groups = _segment_users(variant)
    rows = [[label, str(len(users)), arm.label, str(arm.segment_scores[label].metrics[_DELTA_METRIC]),
             *_pairing_cells(arm, arm.segment_scores[label], ablation)]
            for label, users in groups.items() if users for arm in variant.arms]
    empty = [label for label, users in groups.items() if not users]
    header = ["segment", "users", "ranker", _DELTA_METRIC, *_pairing_header(ablation)]
    return ["", "### Segments", "", "History: the user's ratings before the hidden one in the copy; head: the hidden "
            "movie is among the 20% most rated movies of the copy, tail otherwise. Paired differences within the "
            "segment."
            + (f" No user in: {', '.join(empty)}." if empty else ""), "", _markdown_table(header, rows)]


def _variant_tables(variant: Variant) -> str:
    n = len(variant.targets)
    baseline = _baseline(variant)
    ablation = any(arm.ablated for arm in variant.arms)
    quality = [[arm.label, *(str(arm.scores.metrics[m]) for m in METRICS),
                "–" if arm.scores.delta is None else str(arm.scores.delta), *_pairing_cells(arm, arm.scores, ablation),
                f"{arm.scores.coverage:.3f}", f"{arm.scores.long_tail:.3f}"] for arm in variant.arms]
    cost = [[arm.label, arm.backend, "–" if arm.prep_s is None else f"{arm.prep_s:.1f}",
             "–" if arm.prep_memory is None else f"{arm.prep_memory.peak_gib:.2f} (+{arm.prep_memory.added_gib:.2f})",
             _per_user_cost(arm.rank_s, n), _per_user_cost(arm.serve_s, n),
             _counter(arm, n, "llm_calls"), _counter(arm, n, "prompt_tokens", "completion_tokens"),
             "–" if arm.from_store is None else f"{arm.from_store}/{n}"]
            for arm in variant.arms]
    parts = [f"## {variant.title}", "", f"{n} users. {variant.note}", "",
             _markdown_table(["ranker", *METRICS, f"Δ{_DELTA_METRIC} vs {baseline.label if baseline else BASELINE}",
                              *_pairing_header(ablation), f"coverage@{TOP_N}", f"long-tail@{TOP_N}"], quality),
             "", _markdown_table(["ranker", "backend", "prep s", "prep peak GiB (+added)", "rank ms/user",
                                  "serve ms/user", "LLM calls/user", "tokens/user", "served from store"], cost)]
    if variant.segments:
        parts += _segment_table(variant, ablation)
    summaries = [a.summary for a in variant.arms if a.summary]
    if summaries:
        parts += ["", *(f"- {s}" for s in summaries)]
    return "\n".join(parts)


def write_report(path: Path, chart: Path, command: str, facts: Mapping[str, str], variants: Sequence[Variant]) -> None:
    lines = [f"# sparrow-llm eval, {datetime.now():%Y-%m-%d %H:%M}", "", f"Command: `{command or 'run_eval(...)'}`", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += ["", "Leave-last-out by time (protocol: `sparrow_llm/evaluation/run.py`). Means with 95% bootstrap "
              "intervals over users; rated movies removed from every list except the host's as-is rows; Δ is "
              "the paired per-user difference against host-emb, for a reranker against the base it reranks, and for "
              "a ranker with an ablation against the same ranker without the LLM's features; "
              "costs are per evaluated user, the preparation's (training) in total.", ""]
    lines += [part for variant in variants for part in (_variant_tables(variant), "")]
    lines += [f"![{', '.join(_CHART_METRICS)} per ranker]({chart.name})", ""]
    path.write_text("\n".join(lines))


def plot(path: Path, variants: Sequence[Variant]) -> None:
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


def write_per_user(path: Path, variants: Sequence[Variant]) -> None:
    """One row per variant, ranker and user: the hidden movie's rank in the list, and the user's segments."""
    blank = (None,) * len(fields(Segment))
    rows = [(v.name, a.label, u, t, rank_of(a.lists[u], t), *(astuple(v.segments[u]) if u in v.segments else blank))
            for v in variants for a in v.arms for u, t in sorted(v.targets.items())]
    columns = ["variant", "ranker", schema.COL_USER, schema.COL_MOVIE, "rank", *(f.name for f in fields(Segment))]
    pd.DataFrame(rows, columns=columns).astype({"rank": "Int64", "history": "Int64"}).to_csv(path, index=False)
