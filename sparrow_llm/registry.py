"""Model names -> where their rankers and preparation steps live, as import strings.

Nothing concrete is imported here (as RecBole's `get_model`): a name is resolved when it is asked
for, so `import sparrow_llm.registry` costs nothing and a ranker's heavy dependencies (torch,
Spark, zhipuai) load only for the models that need them.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from .config import Settings
from .rankers.base import Ranker
from .store import Store

__all__ = ["RANKERS", "PREPARE_STEPS", "resolve", "make_ranker", "prepare_model", "ranker_names"]

# model name -> "module:factory"; factory(settings, store) -> Ranker. The store is where a ranker may
# keep its cache. The Java stage's built-in plugin models (docs/bridge-contract.md) list the same names.
RANKERS: dict[str, str] = {
    "recent": "sparrow_llm.rankers.recent:from_settings",
    "llm": "sparrow_llm.rankers.palr.ranker:from_settings",
    "clickprompt": "sparrow_llm.rankers.clickprompt.ranker:from_settings",
    # Retrieval over the whole catalogue, trained on the data folder's ratings (rankers/retrieval).
    "popularity": "sparrow_llm.rankers.retrieval.ranker:popularity_ranker",
    "ease": "sparrow_llm.rankers.retrieval.ranker:ease_ranker",
    "ease-recent": "sparrow_llm.rankers.retrieval.ranker:ease_recent_ranker",
    "sasrec": "sparrow_llm.rankers.retrieval.ranker:sasrec_ranker",
    # The learned stage (LightGBM LambdaRank over the base's top K), without and with the LLM's features.
    "ltr": "sparrow_llm.rankers.ltr.ranker:ltr_ranker",
    "llm-ltr": "sparrow_llm.rankers.ltr.ranker:llm_ltr_ranker",
}

# model name -> "module:function"; function(settings, progress) -> one summary line. The offline work
# a ranker needs first, over `settings.host.data_webroot` (the demo's fixture, or the evaluation's
# copy without the hidden ratings): PALR's user profiles, ClickPrompt's checkpoint, the retrieval models.
PREPARE_STEPS: dict[str, str] = {
    "llm": "sparrow_llm.pipeline.llm_tuning:prepare",
    "clickprompt": "sparrow_llm.rankers.clickprompt.checkpoint:prepare",
    "popularity": "sparrow_llm.rankers.retrieval.checkpoint:prepare_popularity",
    "ease": "sparrow_llm.rankers.retrieval.checkpoint:prepare_ease",
    "ease-recent": "sparrow_llm.rankers.retrieval.checkpoint:prepare_ease_recent",
    "sasrec": "sparrow_llm.rankers.retrieval.checkpoint:prepare_sasrec",
    "ltr": "sparrow_llm.rankers.ltr.train:prepare_ltr",
    "llm-ltr": "sparrow_llm.rankers.ltr.train:prepare_llm_ltr",
}


def resolve(target: str) -> Any:
    """The object an import string `package.module:name` names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def ranker_names() -> list[str]:
    return list(RANKERS)


def make_ranker(name: str, settings: Settings, store: Store | None = None) -> Ranker:
    try:
        target = RANKERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(RANKERS))}") from None
    factory: Callable[[Settings, Store | None], Ranker] = resolve(target)
    return factory(settings, store)


def prepare_model(name: str, settings: Settings, *, progress: bool = True) -> str | None:
    """Run the model's offline preparation, if it has one; its summary line."""
    target = PREPARE_STEPS.get(name)
    return None if target is None else resolve(target)(settings, progress)
