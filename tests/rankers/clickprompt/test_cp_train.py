"""Training stages, checkpoints, determinism and the evaluation table (tiny data, a few steps)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sparrow_llm.rankers.clickprompt.model import ClickPrompt
from sparrow_llm.rankers.pretrained import WEIGHTS_FILE
from sparrow_llm.rankers.clickprompt.train import HISTORY_FILE, TrainOptions, evaluate, finetune


def _probs(model, data):
    model.eval()
    return torch.cat([model.predict(b) for b in data.batches(64)]).numpy()


def test_pretrain_writes_a_checkpoint(pretrained):
    history = json.loads((pretrained.checkpoint / HISTORY_FILE).read_text())
    assert [e["epoch"] for e in history["validations"]] == [1, 2]
    assert all(np.isfinite(e["valid_mlm_loss"]) for e in history["validations"])
    saved = load_file(str(pretrained.checkpoint / WEIGHTS_FILE))
    assert any(k.startswith("prompt.") for k in saved) and any(k.startswith("mlm_head.") for k in saved)
    assert not any(k.startswith("plm.") for k in saved)  # frozen PLM: reloaded from its package


def test_checkpoint_round_trip_gives_identical_scores(prefix_add_run, tiny_data):
    model = prefix_add_run.model
    again = ClickPrompt.from_pretrained(prefix_add_run.checkpoint)
    np.testing.assert_array_equal(_probs(again, tiny_data.test), _probs(model, tiny_data.test))
    # Dropping the PLM keeps exactly the CTR part of the prediction.
    ctr_only = ClickPrompt.from_pretrained(prefix_add_run.checkpoint, fusion="ctr").eval()
    batch = tiny_data.test.batch(range(8))
    with torch.no_grad():
        torch.testing.assert_close(ctr_only(batch), model.ctr_forward(batch["cat"])[0])
    assert not hasattr(ctr_only, "plm")


def test_fixed_seed_gives_identical_runs(tiny_config, tiny_data, tmp_path):
    config = tiny_config.replace(fusion="prefix")
    options = TrainOptions(epochs=1, batch_size=16, max_steps_per_epoch=3, eval_batch_size=128, progress=False)
    first = finetune(config, tiny_data, tmp_path / "a", options)
    second = finetune(config, tiny_data, tmp_path / "b", options)
    assert [e["train_loss"] for e in first.history] == [e["train_loss"] for e in second.history]
    np.testing.assert_array_equal(_probs(first.model, tiny_data.valid), _probs(second.model, tiny_data.valid))
    other = finetune(config.replace(seed=8), tiny_data, tmp_path / "c", options)
    assert not np.array_equal(_probs(other.model, tiny_data.valid), _probs(first.model, tiny_data.valid))


def test_ctr_only_finetune_starts_from_the_pretrained_ctr_model(pretrained, tiny_config, tiny_data, tmp_path):
    frozen_steps = TrainOptions(epochs=1, batch_size=16, max_steps_per_epoch=1, lr=0.0, weight_decay=0.0,
                                progress=False)
    run = finetune(tiny_config.replace(fusion="ctr"), tiny_data, tmp_path / "ctr", frozen_steps,
                   init_from=pretrained.checkpoint)
    torch.testing.assert_close(run.model.embedding.table.weight, pretrained.model.embedding.table.weight)
    assert not hasattr(run.model, "plm")
    fresh = ClickPrompt(tiny_config.replace(fusion="ctr", seed=99), tiny_data.space)
    assert not torch.equal(fresh.embedding.table.weight, run.model.embedding.table.weight)


def test_init_from_rejects_another_feature_space(pretrained, tiny_config, tiny_data, tmp_path):
    import dataclasses

    from sparrow_llm.rankers.clickprompt.features import FeatureSpace

    shrunk = FeatureSpace({**tiny_data.space.vocabs, "user": tiny_data.space.vocabs["user"][:3]},
                          tiny_data.space.edges, tiny_data.space.movie_stats)
    other = dataclasses.replace(tiny_data, space=shrunk)
    with pytest.raises(ValueError, match="feature space"):
        finetune(tiny_config.replace(fusion="ctr"), other, tmp_path / "x", init_from=pretrained.checkpoint)


def test_early_stopping_keeps_the_best_epoch(tiny_config, tiny_data, tmp_path):
    options = TrainOptions(epochs=4, batch_size=16, max_steps_per_epoch=2, lr=0.05, patience=1, progress=False)
    run = finetune(tiny_config.replace(fusion="ctr"), tiny_data, tmp_path / "es", options)
    aucs = [e["valid_auc"] for e in run.history]
    assert run.best == int(np.argmax(aucs))
    assert evaluate(run.model, tiny_data.valid).auc == pytest.approx(max(aucs))
    assert len(aucs) == 4 or aucs[-1] <= max(aucs)


def test_eval_every_validates_inside_epochs_and_keeps_the_best_step(tiny_config, tiny_data, tmp_path):
    options = TrainOptions(epochs=2, batch_size=16, max_steps_per_epoch=5, eval_every=2, lr=0.05, patience=9,
                           progress=False)
    run = finetune(tiny_config.replace(fusion="ctr"), tiny_data, tmp_path / "every", options)
    # Steps 2 and 4, then each epoch's end (5), continuing the step count across epochs.
    assert [(e["epoch"], e["step"]) for e in run.history] == [(1, 2), (1, 4), (1, 5), (2, 6), (2, 8), (2, 10)]
    aucs = [e["valid_auc"] for e in run.history]
    assert run.best_entry["valid_auc"] == max(aucs)
    assert evaluate(run.model, tiny_data.valid).auc == pytest.approx(max(aucs))
    saved = json.loads((run.checkpoint / HISTORY_FILE).read_text())
    assert saved["steps_per_epoch"] == 5 and saved["best"] == run.best
    with pytest.raises(ValueError, match="eval_every"):
        TrainOptions(eval_every=0)
