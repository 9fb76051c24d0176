import numpy as np
import pytest

from sparrow_llm.rankers.palr.fusion import WEIGHTS, Calibration, base_window_scores, choose_weight, fuse, ndcg_at_10


def test_weight_zero_is_the_base_order_and_one_the_llms():
    llm, base = [0.1, 3.0, -1.0, 2.0], [4.0, 3.0, 2.0, 1.0]
    assert list(np.argsort(-fuse(llm, base, 0.0), kind="stable")) == [0, 1, 2, 3]
    assert list(np.argsort(-fuse(llm, base, 1.0), kind="stable")) == [1, 3, 0, 2]
    # z-normalised: scaling either score changes nothing
    assert np.allclose(fuse(llm, base, 0.4), fuse(np.array(llm) * 7, np.array(base) / 3 + 5, 0.4))
    assert np.allclose(fuse([1, 1, 1], [1, 1, 1], 0.5), 0.0)  # no spread, no preference


def test_base_scores_are_its_own_else_its_positions():
    assert list(base_window_scores([5, 6], {5: 0.5, 6: 0.9, 7: 2.0})) == [0.5, 0.9]
    by_position = base_window_scores([5, 6, 7], None)
    assert list(by_position) == sorted(by_position, reverse=True) and by_position[0] == -1.0
    assert list(base_window_scores([5, 6], {5: 0.5})) == list(base_window_scores([5, 6], None))  # partial: positions


def test_ndcg_of_one_relevant_candidate():
    assert ndcg_at_10([np.array([3.0, 2.0, 1.0])], [0]) == pytest.approx(1.0)
    assert ndcg_at_10([np.array([3.0, 2.0, 1.0])], [1]) == pytest.approx(1 / np.log2(3))
    assert ndcg_at_10([np.arange(12.0)], [0]) == 0.0  # ranked 12th: outside the top 10
    assert ndcg_at_10([np.array([1.0, 2.0])], [-1]) == 0.0  # not among the candidates


def test_the_weight_is_chosen_on_validation_and_ties_go_to_the_base():
    base = [np.array([3.0, 2.0, 1.0])] * 3
    helpful = [np.array([0.0, 5.0, 0.0]), np.array([0.0, 0.0, 5.0]), np.array([5.0, 0.0, 0.0])]
    calibration = choose_weight(helpful, base, [1, 2, 0])
    assert calibration.weight > 0.5 and calibration.table[calibration.weight] > calibration.base_ndcg
    useless = [np.array([0.0, 0.0, 5.0])] * 3  # always the wrong one
    assert choose_weight(useless, base, [0, 0, 0]).weight == 0.0
    assert choose_weight(base, base, [1, 1, 1]).weight == 0.0  # the LLM agrees with the base: a tie
    assert set(calibration.table) == set(WEIGHTS) and calibration.samples == 3
    assert Calibration.from_json(calibration.to_json()) == calibration
