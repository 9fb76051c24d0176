"""EASE's closed form on matrices small enough to check by hand, recency weights, popularity."""
import numpy as np
import pytest

from sparrow_llm.rankers.retrieval.interactions import (Catalogue, Fold, History, ValidationSet, interaction_matrix,
                                                        recency_weights)
from sparrow_llm.config import ConfigError
from sparrow_llm.rankers.retrieval.configuration import EASE, POPULARITY, LinearConfig
from sparrow_llm.rankers.retrieval.linear import Grid, LinearModel, fit_ease, fit_popularity, select_ease

CATALOGUE = Catalogue(np.array([10, 20, 30], dtype=np.int64), ("a", "b", "c"))


def _history(*items, ratings=None):
    items = np.array(items, dtype=np.int64)
    return History(items, np.full(len(items), 4.0) if ratings is None else np.array(ratings, dtype=np.float64))


def test_ease_two_items_by_hand():
    # X = [[1,1],[1,0],[0,1]]: G = [[2,1],[1,2]]; lambda 1: P = inv([[3,1],[1,3]]) = [[3,-1],[-1,3]]/8,
    # B_ij = -P_ij / P_jj = (1/8) / (3/8) = 1/3 off the diagonal, 0 on it.
    b = fit_ease([_history(0, 1), _history(0), _history(1)], 2, l2=1.0)
    np.testing.assert_allclose(b, [[0, 1 / 3], [1 / 3, 0]], atol=1e-6)


def test_ease_solves_its_objective_with_a_zero_diagonal():
    # min ||X - XB||^2 + lambda ||B||^2 s.t. diag(B) = 0: the gradient (G + lambda I) B - G vanishes off the diagonal.
    rng = np.random.default_rng(0)
    histories = [_history(*rng.choice(5, size=rng.integers(1, 5), replace=False)) for _ in range(30)]
    b = fit_ease(histories, 5, l2=3.0).astype(np.float64)
    x = interaction_matrix([h.items for h in histories], 5).toarray()
    gram = x.T @ x
    gradient = (gram + 3.0 * np.eye(5)) @ b - gram
    assert np.allclose(np.diag(b), 0)
    assert np.abs(gradient - np.diag(np.diag(gradient))).max() < 1e-4


def test_disliked_weight_grades_the_matrix_and_can_leave_dislikes_out():
    mixed = _history(0, 1, ratings=[5.0, 2.0])
    assert fit_ease([mixed], 2, l2=1.0, disliked_weight=0.0).max() == 0  # only one liked item: nothing co-occurs
    items, weights = mixed.graded(0.25)
    x = interaction_matrix([items], 2, weights=[weights])
    np.testing.assert_allclose(x.toarray(), [[1.0, 0.25]])


def test_recency_weights_decay_from_the_newest_to_the_floor():
    np.testing.assert_allclose(recency_weights(3, tau=1.0, floor=0.5), [0.5 + 0.5 * np.exp(-2), 0.5 + 0.5 * np.exp(-1), 1])
    np.testing.assert_allclose(recency_weights(2, tau=None, floor=0.5), [1, 1])
    # A repeated item keeps its latest weight.
    np.testing.assert_allclose(interaction_matrix([np.array([0, 1, 0])], 2, tau=1.0).toarray(), [[1, np.exp(-1)]])


def test_scores_are_the_user_vector_times_b_and_popularity_counts_users():
    b = np.array([[0, 2, 0], [1, 0, 3], [0, 0, 0]], dtype=np.float32)
    model = LinearModel(LinearConfig(EASE, l2=1.0), b, CATALOGUE.movie_ids)
    np.testing.assert_allclose(model.scores([_history(0, 1)]), [[1, 2, 3]])
    popularity = fit_popularity([_history(0, 1), _history(1), _history(1, 1)], CATALOGUE)
    np.testing.assert_allclose(popularity.scores([_history(2)]), [[1, 3, 0]])


def test_save_and_load_round_trip(tmp_path):
    model = LinearModel(LinearConfig(EASE, l2=5.0, disliked_weight=0.5, recency_tau=3.0, recency_floor=0.2),
                        np.arange(9, dtype=np.float32).reshape(3, 3), CATALOGUE.movie_ids)
    loaded = LinearModel.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.weights, model.weights)
    np.testing.assert_array_equal(loaded.movie_ids, CATALOGUE.movie_ids)


def test_selection_picks_the_configuration_that_finds_the_held_out_movie():
    # Six users went 0 -> 1 -> 2, eight 0 -> 3. The validation user liked 0 and disliked 1; the held-out movie
    # is 2. Reading the disliked 1 (weight 1) points to 2; reading liked movies only (weight 0), 0 points to 3.
    catalogue = Catalogue(np.array([10, 20, 30, 40], dtype=np.int64), ("a", "b", "c", "d"))
    user = _history(0, 1, ratings=[4.0, 2.0])
    train = [_history(0, 1, 2)] * 6 + [_history(0, 3)] * 8 + [user]
    valid = ValidationSet([user], np.array([2]))
    best, trials = select_ease([Fold(train, valid)], catalogue, Grid((1.0,), (0.0, 1.0), ((None, 0.0),)))
    assert {t["disliked_weight"]: t["valid_ndcg10"] for t in trials} == pytest.approx({0.0: 1 / np.log2(3), 1.0: 1.0})
    assert best == LinearConfig(EASE, l2=1.0, disliked_weight=1.0)


@pytest.mark.parametrize("fields, message", [
    ({"kind": "knn"}, "LinearConfig.kind must be"),
    ({"kind": EASE, "l2": 0.0}, "EASE needs lambda"),
    ({"kind": POPULARITY, "disliked_weight": 1.5}, "disliked_weight and recency_floor must be in"),
    ({"kind": EASE, "l2": 1.0, "recency_tau": 0.0}, "recency_tau must be None or > 0"),
    ({"kind": EASE, "l2": float("nan")}, "LinearConfig.l2 must be a number >= 0"),
])
def test_a_config_out_of_range_is_refused_on_construction(fields, message):
    with pytest.raises(ConfigError, match=message):
        LinearConfig(**fields)
