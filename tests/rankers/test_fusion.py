"""The one fusion (`rankers.fusion`): weight 0 is the base's order, and the weight rule cannot pick a loss."""
import numpy as np

from sparrow_llm.rankers.fusion import WEIGHTS, Calibration, choose_weight, fuse, position_scores, window_base_scores


def test_weight_zero_is_the_base_order_and_one_the_rerankers():
    reranker, base = [0.1, 3.0, -1.0, 2.0], [4.0, 3.0, 2.0, 1.0]
    assert list(np.argsort(-fuse(reranker, base, 0.0), kind="stable")) == [0, 1, 2, 3]
    assert list(np.argsort(-fuse(reranker, base, 1.0), kind="stable")) == [1, 3, 0, 2]
    # z-standardised: scaling either score changes nothing
    assert np.allclose(fuse(reranker, base, 0.4), fuse(np.array(reranker) * 7, np.array(base) / 3 + 5, 0.4))
    assert np.allclose(fuse([1, 1, 1], [1, 1, 1], 0.5), 0.0)  # no spread, no preference
    # equal base scores stay in the window's order at weight 0
    assert list(np.argsort(-fuse([3.0, 2.0, 1.0], [1.0, 1.0, 1.0], 0.0), kind="stable")) == [0, 1, 2]


def test_a_missing_base_score_is_the_windows_lowest_and_no_scores_mean_positions():
    assert list(window_base_scores([5, 6], {5: 0.5, 6: 0.9, 7: 2.0})) == [0.5, 0.9]
    assert list(window_base_scores([5, 6, 7], {5: 0.5, 6: 0.9})) == [0.5, 0.9, 0.5]
    assert list(window_base_scores([5, 6, 7], None)) == list(position_scores(3))
    assert list(window_base_scores([5, 6], {9: 1.0})) == list(position_scores(2))
    assert position_scores(3)[0] == -1.0 and list(position_scores(3)) == sorted(position_scores(3), reverse=True)


def test_a_weight_above_zero_needs_a_validation_gain_whose_lower_bound_is_above_zero():
    base = [np.array([3.0, 2.0, 1.0])] * 40
    targets = [1, 2, 0, 1] * 10
    helpful = [np.eye(3)[t] * 5 for t in targets]  # always the right one
    chosen = choose_weight(helpful, base, targets)
    assert chosen.weight > 0 and chosen.table[chosen.weight] > chosen.base_ndcg and chosen.gain[1] > 0
    useless = [np.array([0.0, 0.0, 5.0])] * 40
    assert choose_weight(useless, base, [0] * 40).weight == 0.0
    assert choose_weight(base, base, [1] * 40).weight == 0.0  # agrees with the base: no gain, a tie
    # A gain in 1 of 40 rows is no evidence: its interval reaches 0.
    lucky = [np.eye(3)[2] * 5] + [np.array([3.0, 2.0, 1.0])] * 39
    assert choose_weight(lucky, base, [2] + [0] * 39).weight == 0.0
    assert set(chosen.table) == set(WEIGHTS) and chosen.samples == 40
    assert Calibration.from_json(chosen.to_json()) == chosen
    old = {"weight": 0.3, "samples": 5, "ndcg_by_weight": {"0.0": 0.1, "1.0": 0.2}}  # written before the gain
    assert Calibration.from_json(old).gain is None
