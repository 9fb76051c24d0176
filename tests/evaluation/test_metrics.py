import math

import pytest

from sparrow_llm.evaluation.metrics import (

    METRICS, bootstrap_mean, coverage, hit_rate, long_tail_share, ndcg, rank_of, reciprocal_rank,

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
