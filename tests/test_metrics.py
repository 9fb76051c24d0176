import math

import numpy as np
import pytest

from sparrow_llm.metrics import (
    METRICS, bootstrap_difference, bootstrap_mean, coverage, hit_rate, long_tail_share, mean_ndcg_of_scores, ndcg,
    ndcg_of_scores, rank_of, ranks_of_scores, reciprocal_rank,
)


def test_hand_computed_positions():
    ranked = [5, 3, 9, 1]
    assert rank_of(ranked, 9) == 3
    assert hit_rate(ranked, 9, 2) == 0.0 and hit_rate(ranked, 9, 3) == 1.0
    assert ndcg(ranked, 9, 5) == pytest.approx(1 / math.log2(4)) == pytest.approx(0.5)
    assert ndcg(ranked, 5, 5) == 1.0
    assert reciprocal_rank(ranked, 1) == 0.25


def test_missing_target_scores_zero_everywhere():
    for name, fn in METRICS.items():
        assert fn([1, 2, 3], 42) == 0.0, name


def test_k_larger_than_the_list_looks_at_all_of_it():
    assert hit_rate([7, 8], 8, 10) == 1.0
    assert ndcg([7, 8], 8, 10) == pytest.approx(1 / math.log2(3))
    assert hit_rate([], 8, 10) == 0.0


def test_ties_in_the_list_count_the_first_occurrence():
    # A list that repeats an id (a buggy ranker) must not score better than its first position.
    assert rank_of([4, 2, 2], 2) == 2 and reciprocal_rank([4, 2, 2], 2) == 0.5


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_n():
    small = bootstrap_mean([0, 1] * 10, seed=1)
    big = bootstrap_mean([0, 1] * 1000, seed=1)
    assert small.low <= small.mean == 0.5 <= small.high
    assert (big.high - big.low) < (small.high - small.low)
    assert bootstrap_mean([1, 1, 1]).low == 1.0
    assert math.isnan(bootstrap_mean([]).mean)


def test_bootstrap_is_reproducible_with_a_seed():
    vals = [0.1, 0.5, 0.9, 0.3]
    assert bootstrap_mean(vals, seed=3) == bootstrap_mean(vals, seed=3)
    assert bootstrap_mean(vals, seed=4) != bootstrap_mean(vals, seed=3)  # the seed is what fixes it


def test_long_tail_and_coverage():
    popularity = {m: 100 - m for m in range(10)}  # movies 0, 1 are the head at 20%
    assert long_tail_share([[0, 1], [0, 5]], popularity) == pytest.approx(0.25)
    assert coverage([[0, 1], [0, 5]], 10) == pytest.approx(0.3)


def test_bootstrap_difference_pairs_the_users():
    # Every user gains exactly 0.5: a paired interval has no spread, whatever the users' own spread.
    base = [0.0, 1.0, 0.2, 0.9, 0.4]
    diff = bootstrap_difference([b + 0.5 for b in base], base, seed=2)
    assert diff.mean == pytest.approx(0.5) and diff.low == pytest.approx(0.5) and diff.high == pytest.approx(0.5)


def test_a_tie_with_the_target_ranks_by_index():
    # Candidates 1 and 3 tie with the target 2's score: 1 comes before it, 3 after it, as the ranker serves.
    scores = np.array([[0.1, 0.5, 0.5, 0.5, 0.9]])
    assert ranks_of_scores(scores, [2]).tolist() == [3]
    assert ranks_of_scores(scores, [1]).tolist() == [2] and ranks_of_scores(scores, [3]).tolist() == [4]
    served = list(np.argsort(-scores[0], kind="stable"))
    assert [rank_of(served, t) for t in range(5)] == ranks_of_scores(np.repeat(scores, 5, 0), range(5)).tolist()
    assert ndcg_of_scores(scores, [2], k=2).tolist() == [0.0]
    assert ndcg_of_scores(scores, [2], k=3) == pytest.approx([0.5])


def test_scores_and_served_lists_agree():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 4, size=(30, 12)).astype(float)  # many ties
    scores[3, 2] = np.nan
    targets = rng.integers(0, 12, size=30)
    targets[3] = 2
    for k in (1, 5, 10):
        by_list = [ndcg(list(np.argsort(-row, kind="stable")), t, k) for row, t in zip(scores, targets)]
        assert ndcg_of_scores(scores, targets, k) == pytest.approx(by_list)
        assert ndcg_of_scores(list(scores), targets, k) == pytest.approx(by_list)  # rows as a list: the same


def test_rows_of_any_length_excluded_items_and_missing_targets():
    rows = [np.array([0.3, 0.9, 0.1]), np.array([0.2, 0.8]), np.array([0.5]), np.array([0.4, 0.6])]
    # Row 0: the better candidate 1 is excluded (rated), so the target 0 is first; row 1: no target;
    # row 2: its only candidate excluded; row 3: the target second.
    ranks = ranks_of_scores(rows, [0, -1, 0, 0], excluded=[[1], [], [0], []])
    assert ranks.tolist() == [1, 0, 0, 2]
    assert ndcg_of_scores(rows, [0, -1, 0, 0], excluded=[[1], [], [0], []]) == pytest.approx(
        [1.0, 0.0, 0.0, 1 / math.log2(3)])
    matrix = np.array([[0.3, 0.9, 0.1], [0.2, 0.8, 0.7]])
    assert ranks_of_scores(matrix, [0, 2], excluded=[np.array([1]), np.array([], dtype=int)]).tolist() == [1, 2]
    assert math.isnan(mean_ndcg_of_scores(np.zeros((0, 3)), []))
    with pytest.raises(ValueError, match="2 score rows but 1 targets"):
        ranks_of_scores(matrix, [0])
