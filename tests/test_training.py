import pytest
import torch

from sparrow_llm.training import EarlyStopping, torch_threads


def test_torch_threads_sets_the_count_inside_the_block_and_restores_it():
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with torch_threads(wanted):
        assert torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(wanted):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before  # restored on an error too
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_early_stopping_keeps_the_best_and_counts_validations_without_a_gain():
    stopping = EarlyStopping(patience=2)
    taken = []

    def state(tag):
        return lambda: taken.append(tag) or tag

    assert not stopping.update(0.3, 1, state("a"))
    assert not stopping.update(0.5, 2, state("b"))
    assert not stopping.update(0.5, 3, state("c"))  # no gain: a tie is not better
    assert not stopping.update(0.6, 4, state("d"))  # a gain resets the count
    assert not stopping.update(0.2, 5, state("e"))
    assert stopping.update(0.1, 6, state("f"))  # the second in a row without a gain
    assert (stopping.best, stopping.best_step, stopping.state, stopping.stop) == (0.6, 4, "d", True)
    assert taken == ["a", "b", "d"]  # the state is copied only when it is the best


def test_early_stopping_smaller_is_better_and_always():
    stopping = EarlyStopping(patience=1, bigger=False)
    stopping.update(2.0, 1, lambda: 1)
    assert not stopping.update(1.5, 2, lambda: 2) and stopping.best == 1.5
    assert not stopping.update(float("nan"), 3, lambda: 3, always=True) and stopping.state == 3
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
