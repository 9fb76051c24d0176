"""PALR fixtures: a tiny data folder cut from the fixture, and a tiny causal LM with SmolLM2's tokenizer and chat
template (two layers of width 16), so fine-tuning runs a few steps in seconds."""
from __future__ import annotations

from pathlib import Path

import pytest

from sparrow_llm.config import LLMSettings, Settings
from sparrow_llm.schema import ITEM_EMB_CSV, MOVIES_CSV, RATINGS_CSV

TINY_USERS = 30


@pytest.fixture(scope="session")
def tiny_folder(ratings, fixture_webroot, tmp_path_factory) -> Path:
    """The first 30 fixture users' ratings; movies.csv and item2vecEmb.csv linked."""
    folder = tmp_path_factory.mktemp("palr-data")
    users = sorted(ratings["userId"].unique())[:TINY_USERS]
    (folder / RATINGS_CSV).parent.mkdir(parents=True)
    ratings[ratings["userId"].isin(users)].to_csv(folder / RATINGS_CSV, index=False)
    for rel in (MOVIES_CSV, ITEM_EMB_CSV):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).symlink_to(fixture_webroot / rel)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A transformers folder: a 2-layer Llama of width 16 (random weights) with SmolLM2's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sparrow_llm.rankers.llm.local_lm import converted_model, model_source

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(converted_model(model_source(None), LLMSettings.models_dir),
                                              local_files_only=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_settings(data: Path, model: Path, work: Path, **llm) -> Settings:
    return Settings().replace(host={"data_dir": data, "work_dir": work / "work"},
                              llm={"local_model": model, "models_dir": work / "models", "local_threads": 1,
                                   "verbalizer_k": 5, **llm})
