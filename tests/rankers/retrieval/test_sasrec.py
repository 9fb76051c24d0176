"""SASRec: it learns a sequence pattern, masks the future, and saves and loads like transformers."""
import numpy as np
import pytest
import torch

from sparrow_llm.rankers.retrieval.interactions import History, ValidationSet
from sparrow_llm.config import ConfigError
from sparrow_llm.rankers.retrieval.configuration import SASRecConfig
from sparrow_llm.rankers.retrieval.sasrec import PAD, SASRec, encode
from sparrow_llm.rankers.retrieval.train import TrainOptions, train_sasrec, windows

N_ITEMS = 6


def _cycle(start: int, length: int) -> History:
    items = np.array([(start + i) % N_ITEMS for i in range(length)], dtype=np.int64)
    return History(items, np.full(length, 4.0))


def test_windows_cover_every_transition_once():
    inputs, targets = windows([np.arange(7)], max_len=3)  # 0..6: windows [3..6] and [0..3]
    assert inputs.tolist() == [[4, 5, 6], [1, 2, 3]]  # token = index + 1
    assert targets.tolist() == [[5, 6, 7], [2, 3, 4]]
    short, _ = windows([np.array([2, 4])], max_len=3)
    assert short.tolist() == [[PAD, PAD, 3]]


def test_it_learns_that_each_item_follows_the_previous_one():
    # Every sequence walks the cycle 0 -> 1 -> ... -> 5 -> 0; the next item after ...k is k+1.
    train = [_cycle(start, 8) for start in range(N_ITEMS) for _ in range(4)]
    valid = ValidationSet([_cycle(start, 5) for start in range(N_ITEMS)],
                          np.array([(start + 5) % N_ITEMS for start in range(N_ITEMS)]))
    config = SASRecConfig(n_items=N_ITEMS, max_len=8, hidden=16, blocks=1, dropout=0.0, seed=0)
    result = train_sasrec(config, train, valid, TrainOptions(epochs=40, batch_size=8, lr=1e-2, eval_every=5,
                                                             patience=8, progress=False))
    assert result.valid_ndcg10 == 1.0
    assert result.model.items.weight.device.type == "cpu"  # trained on CUDA when there is one, served on the CPU
    scores = result.model.predict([np.array([3, 4]), np.array([5])])
    assert scores.argmax(axis=1).tolist() == [5, 0]


def test_the_output_at_a_position_never_sees_later_items():
    model = SASRec(SASRecConfig(n_items=N_ITEMS, max_len=4, hidden=8, dropout=0.0)).eval()
    a, b = encode([np.array([0, 1, 2, 3])], 4), encode([np.array([0, 1, 5, 4])], 4)
    with torch.no_grad():
        assert torch.allclose(model(a)[0, :2], model(b)[0, :2], atol=1e-6)
        assert not torch.allclose(model(a)[0, 3], model(b)[0, 3])


def test_save_and_load_give_the_same_predictions(tmp_path):
    model = SASRec(SASRecConfig(n_items=N_ITEMS, max_len=4, hidden=8, seed=3))
    loaded = SASRec.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config == model.config and (tmp_path / "m" / "config.json").is_file()
    sequences = [np.array([1, 2]), np.array([], dtype=np.int64), np.array([5, 0, 3, 2, 1])]
    np.testing.assert_allclose(loaded.predict(sequences), model.predict(sequences), atol=1e-6)
    assert np.isfinite(model.predict(sequences)).all()  # an empty history is all padding, still no NaN
    loss = SASRec.loss(model(encode(sequences, 4)), encode([np.array([2, 3]), np.array([], dtype=np.int64),
                                                            np.array([0, 3, 2, 1, 4])], 4))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("fields, message", [
    ({"n_items": 0}, "SASRecConfig.n_items must be a number >= 1"),
    ({"hidden": 10, "heads": 3}, "must be a multiple of heads"),
    ({"dropout": 1.0}, "dropout must be in"),
    ({"interactions": "clicked"}, "interactions must be one of"),
])
def test_a_config_out_of_range_is_refused_on_construction(fields, message):
    with pytest.raises(ConfigError, match=message):
        SASRecConfig(**{"n_items": N_ITEMS, **fields})
