"""Model names -> where their rankers and preparation steps live, as import strings.

Nothing concrete is imported here (as RecBole's `get_model`): a name is resolved when it is asked
for, so `import sparrow_llm.registry` costs nothing and a ranker's heavy dependencies (torch,
Spark, zhipuai) load only for the models that need them.
"""
from __future__ import annotations

import importlib
from typing import Any

from .config import ConfigError, Settings
from .rankers.base import Ranker
from .rankers.composed import Reranked
from .store import Store

__all__ = ["RANKERS", "RERANKERS", "ABLATIONS", "PREPARE_STEPS", "resolve", "make_ranker", "make_base", "base_of",
           "prepare_model", "PROFILE_STEPS", "prepare_profiles", "ranker_names"]

# Rerankers: model name -> "module:factory"; factory(settings, store, base) -> Ranker, where `base` is the
# ranker whose top `settings.base_k` it reranks (None: the host's candidates); `make_ranker` composes the two.
RERANKERS: dict[str, str] = {
    "llm": "sparrow_llm.rankers.palr.ranker:from_settings",
    "clickprompt": "sparrow_llm.rankers.clickprompt.ranker:from_settings",
    # The learned stage (LightGBM LambdaRank over the base's top K), without and with the LLM's features.
    "ltr": "sparrow_llm.rankers.ltr.ranker:ltr_ranker",
    "llm-ltr": "sparrow_llm.rankers.ltr.ranker:llm_ltr_ranker",
}

# Rankers on their own: model name -> "module:factory"; factory(settings, store) -> Ranker. The store is where
# a ranker may keep its cache. With RERANKERS, the Java stage's built-in plugin models
# (docs/bridge-contract.md) list the same names.
RANKERS: dict[str, str] = {
    "recent": "sparrow_llm.rankers.recent:from_settings",
    # Retrieval over the whole catalogue, trained on the data folder's ratings (rankers/retrieval).
    "popularity": "sparrow_llm.rankers.retrieval.ranker:popularity_ranker",
    "ease": "sparrow_llm.rankers.retrieval.ranker:ease_ranker",
    "ease-recent": "sparrow_llm.rankers.retrieval.ranker:ease_recent_ranker",
    "sasrec": "sparrow_llm.rankers.retrieval.ranker:sasrec_ranker",
}

# Ablations: model name -> the registered model that is the same ranker without the LLM's features (e.g. a learned
# stage and that stage trained without them). `sparrow-llm eval` runs the ablated model too and reports the paired gain.
ABLATIONS: dict[str, str] = {"llm-ltr": "ltr"}

# model name -> "module:function"; function(settings, progress) -> one summary line; a reranker's step also takes
# `make_base`, which builds the configured base of a data folder's settings (None: the host's candidates). The offline work
# a ranker needs first, over `settings.host.data_webroot` (the demo's fixture, or the evaluation's copy
# without the hidden ratings): PALR's fusion weight or profiles, ClickPrompt's checkpoint, the retrieval models.
PREPARE_STEPS: dict[str, str] = {
    "llm": "sparrow_llm.rankers.palr.tuning:prepare",
    "clickprompt": "sparrow_llm.rankers.clickprompt.tuning:prepare",
    "popularity": "sparrow_llm.rankers.retrieval.checkpoint:prepare_popularity",
    "ease": "sparrow_llm.rankers.retrieval.checkpoint:prepare_ease",
    "ease-recent": "sparrow_llm.rankers.retrieval.checkpoint:prepare_ease_recent",
    "sasrec": "sparrow_llm.rankers.retrieval.checkpoint:prepare_sasrec",
    "ltr": "sparrow_llm.rankers.ltr.train:prepare_ltr",
    "llm-ltr": "sparrow_llm.rankers.ltr.train:prepare_llm_ltr",
}

# model name -> "module:function"; function(settings, progress, users) -> one summary line: the user profiles the
# model's prompts and the comparison page show, made for the users `rerank` and the demo rank, before they rank.
PROFILE_STEPS: dict[str, str] = {"llm": "sparrow_llm.rankers.palr.tuning:prepare_profiles"}


def resolve(target: str) -> Any:
    """The object an import string `package.module:name` names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def ranker_names() -> list[str]:
    return [*RANKERS, *RERANKERS]


def base_of(name: str, settings: Settings) -> str | None:
    """The name of the ranker `name` reranks (None: it ranks on its own, or reranks the host's candidates)."""
    return settings.base if name in RERANKERS else None


def make_base(settings: Settings, store: Store | None = None) -> Ranker | None:
    """The configured base (`settings.base`), None for the host's candidates."""
    if settings.base is None:
        return None
    if settings.base not in RANKERS:
        raise ConfigError(f"SPARROW_LLM_BASE={settings.base!r} is not a ranker a reranker can rerank; use one of "
                          f"{', '.join(sorted(RANKERS))} or 'host'")
    return make_ranker(settings.base, settings, store)


def make_ranker(name: str, settings: Settings, store: Store | None = None, **options: Any) -> Ranker:
    """The ranker served as `name`: a ranker on its own, or a reranker composed over the configured base
    (`Reranked(base, reranker, K)`, K the reranker's `window`, else `settings.base_k`); `options` go to the factory (e.g. a ClickPrompt checkpoint).
    Close it when done (`Ranker.close`)."""
    if name in RERANKERS:
        base = make_base(settings, store)
        try:
            reranker = resolve(RERANKERS[name])(settings, store, base, **options)
        except BaseException:
            if base is not None:
                base.close()
            raise
        return reranker if base is None else Reranked(base, reranker, getattr(reranker, "window", None) or settings.base_k)
    try:
        target = RANKERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(ranker_names()))}") from None
    return resolve(target)(settings, store, **options)


def prepare_model(name: str, settings: Settings, *, progress: bool = True) -> str | None:
    """Run the model's offline preparation, if it has one; its summary line."""
    target = PREPARE_STEPS.get(name)
    if target is None:
        return None
    step = resolve(target)
    return step(settings, progress, make_base) if name in RERANKERS else step(settings, progress)


def prepare_profiles(name: str, settings: Settings, users: list[int] | None, *, progress: bool = True) -> str | None:
    """Profile `users` (None: every user) for the model, if it shows profiles; the step's summary line."""
    target = PROFILE_STEPS.get(name)
    return None if target is None else resolve(target)(settings, progress, users)
