"""`llm finetune` on a tiny config: a few LoRA steps of a 2-layer model on a tiny data folder, the checkpoint keyed by
the data's content, and the served model picking it up (or not, for other data)."""
import json
import shutil

import pytest
import torch
from safetensors.numpy import load_file

from sparrow_llm.rankers.llm.base import make_backend
from sparrow_llm.rankers.base import base_key
from sparrow_llm.rankers.palr.checkpoint import ADAPTER, ADAPTER_WEIGHTS, FINETUNED, ZERO_SHOT, checkpoint_dir, serving_model
from sparrow_llm.rankers.palr.finetune import FinetuneOptions, finetune
from sparrow_llm.rankers.palr.prompts import Prompts
from sparrow_llm.rankers.palr.ranker import from_settings
from sparrow_llm.registry import make_base
from sparrow_llm.schema import RATINGS_CSV

from tests.fake_glm import context
from tests.rankers.palr.conftest import tiny_settings

OPTIONS = FinetuneOptions(max_steps=3, eval_every=2, batch_size=2, check_valid=4, max_valid=8, progress=False)


@pytest.fixture(scope="module")
def trained(spark, tiny_folder, tiny_model, tmp_path_factory):
    settings = tiny_settings(tiny_folder, tiny_model, tmp_path_factory.mktemp("finetune"))
    return settings, finetune(settings, make_base, OPTIONS)


def _base_key(settings):
    base = make_base(settings)
    try:
        return base_key(base)
    finally:
        base.close()


def test_a_few_lora_steps_are_kept_by_the_datas_content(trained, tiny_folder):
    settings, info = trained
    assert (info["steps"], info["stopped"], [h["step"] for h in info["history"]]) == (3, "max_steps", [2, 3])
    assert info["best_step"] in (2, 3) and info["train_samples"] > 20 and 0 < info["valid_samples"] <= 8
    assert 1 <= info["check_samples"] <= 4 and 0 < info["peak_rss_gib"] < 6
    # The same command trains on a CUDA device when torch sees one (run by `device` on a lent GPU), else the CPU.
    assert info["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert info["epochs"] == 3 * 2 / info["train_samples"] and info["steps_per_s"] > 0
    llm = make_backend(settings.llm)
    key = _base_key(settings)
    directory = checkpoint_dir(settings, llm, Prompts.from_settings(settings.llm), key)
    assert info["data_key"] in directory.name and directory.name.endswith(f"-v2-k5-{key}") and info["base"] == key
    assert key.startswith(settings.base + "-")
    config = json.loads((directory / ADAPTER / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == (8, 32, ["q_proj", "v_proj"])
    weights = load_file(directory / ADAPTER / ADAPTER_WEIGHTS)
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert len(lora_b) == 4 and any(abs(v).sum() > 0 for v in lora_b)  # B starts at zero: it trained
    fusion = json.loads((directory / f"fusion-{FINETUNED}.json").read_text())
    assert 0.0 <= fusion["weight"] <= 1.0 and fusion["samples"] == info["valid_samples"]


def test_the_served_model_is_the_adapter_for_this_data_only(trained, tiny_folder, tmp_path):
    settings, _ = trained
    prompts = Prompts.from_settings(settings.llm)
    key = _base_key(settings)
    serving = serving_model(settings, make_backend(settings.llm), prompts, key)
    assert serving.variant == FINETUNED and serving.calibrated and "+lora-" in serving.llm.name
    off = serving_model(settings.replace(llm={"local_finetuned": False}), make_backend(settings.llm), prompts, key)
    # No weight chosen for the zero-shot model: the base's order, never the LLM's unchosen one.
    assert (off.variant, off.calibrated, off.weight) == (ZERO_SHOT, False, 0.0) and "+lora" not in off.llm.name
    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other, symlinks=True)
    with open(other / RATINGS_CSV, "a") as f:
        f.write("1,1,4.0,1700000000\n")
    moved = settings.replace(host={"data_dir": other})
    assert serving_model(moved, make_backend(settings.llm), prompts, key).variant == ZERO_SHOT
    ranker = from_settings(settings.replace(llm={"reasons": 0}), None, make_base(settings))  # the order's calls only
    ranking = ranker.rank(context(1))
    assert ranker.backend == serving.llm.name and ranking.meta["parse"] == "ok"
    # A calibrated weight of 0 is the base's order: no forward pass is spent on it.
    assert ranking.meta["weight"] == serving.weight and ranking.meta["llm_calls"] == int(serving.weight > 0)


def test_another_base_never_reuses_the_adapter_or_weight_tuned_over_this_one(trained):
    settings, _ = trained
    other = settings.replace(base="popularity")
    other_key = _base_key(other)
    assert other_key != _base_key(settings)
    prompts = Prompts.from_settings(settings.llm)
    serving = serving_model(other, make_backend(settings.llm), prompts, other_key)
    assert (serving.variant, serving.calibrated, serving.weight) == (ZERO_SHOT, False, 0.0)
    assert "+lora" not in serving.llm.name
    host = serving_model(settings.replace(base=None), make_backend(settings.llm), prompts, base_key(None))
    assert (host.variant, host.calibrated) == (ZERO_SHOT, False)


def test_a_failed_save_keeps_the_adapter_served_before(trained):
    # The adapter is published whole: a save that fails half-way leaves the previous adapter as it was.
    from sparrow_llm.rankers.palr.finetune import _store

    settings, _ = trained
    directory = checkpoint_dir(settings, make_backend(settings.llm), Prompts.from_settings(settings.llm),
                               _base_key(settings))
    before = {p.name: p.read_bytes() for p in (directory / ADAPTER).iterdir()}

    class FailingSave:
        def save_pretrained(self, folder):
            (folder / ADAPTER_WEIGHTS).write_bytes(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _store(directory, FailingSave(), {}, None)
    assert {p.name: p.read_bytes() for p in (directory / ADAPTER).iterdir()} == before
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) == []
