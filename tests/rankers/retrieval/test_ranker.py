"""The retrieval rankers: the whole catalogue for a user, rated movies left out, cold users to the host,
reasons true of the data."""
import re

import pytest

from sparrow_llm import schema
from sparrow_llm.domain import UserContext, UserRating
from sparrow_llm.registry import RANKERS, make_ranker

from .conftest import MOVIES, tiny_ratings

MODELS = ("popularity", "ease", "ease-recent", "sasrec")


def _ctx(user_id: int, *rated: tuple[int, float], candidates=tuple(MOVIES)) -> UserContext:
    # The catalogue as candidates (source `catalogue`), no movie metadata: a retrieval ranker reads none.
    return UserContext(user_id, tuple(UserRating(m, r, 100 + i) for i, (m, r) in enumerate(rated)), candidates, {})


@pytest.fixture()
def rankers(tiny_settings):
    return {name: make_ranker(name, tiny_settings) for name in MODELS}


def test_registered_under_the_stage_model_names(rankers):
    assert set(MODELS) <= set(RANKERS)
    assert [r.name for r in rankers.values()] == list(MODELS)
    assert all(r.candidate_source == "catalogue" and r.version.startswith(r.name + "-") for r in rankers.values())


def test_the_catalogue_is_ranked_without_what_the_user_rated(rankers):
    for ranker in rankers.values():
        ranking = ranker.rank(_ctx(99, (1, 4.0), (2, 5.0), (8, 1.0)))
        ids = [item.movie_id for item in ranking.items]
        assert set(ids) <= set(MOVIES) - {1, 2, 8} and len(ids) == len(set(ids)), ranker.name
        scores = [item.score for item in ranking.items]
        assert scores == sorted(scores, reverse=True), ranker.name


def test_only_the_users_candidates_are_ranked(rankers):
    for ranker in rankers.values():
        ranking = ranker.rank(_ctx(99, (3, 4.0), candidates=(7, 5, 3)))
        assert {i.movie_id for i in ranking.items} == {5, 7}, ranker.name  # 3 is rated
        assert ranker.rank(_ctx(99, (3, 4.0), candidates=(3,))) is None, ranker.name


def test_cold_and_unknown_users_get_none_so_the_host_order_is_served(rankers):
    for ranker in rankers.values():
        cold, unknown, known = ranker.rank_many([_ctx(1), _ctx(2, (12345, 5.0)), _ctx(3, (5, 4.0))])
        assert cold is None and unknown is None and known is not None, ranker.name


def test_popularity_counts_raters_and_sasrec_learns_the_common_path(rankers):
    ranking = rankers["popularity"].rank(_ctx(99, (3, 4.0)))
    # 6 is rated by all 14 users, 1, 2, 4 and 8 by users 1-12: ties keep the movie id order.
    assert [i.movie_id for i in ranking.items][:3] == [6, 1, 2]
    assert ranking.items[0].reason == "rated by 14 people here"
    # Twelve users went 6 -> 1 -> 2 -> 8 -> 3 -> 4: after 6, 1, 2, 8 comes 3.
    assert rankers["sasrec"].rank(_ctx(99, (6, 3.0), (1, 4.0), (2, 4.5), (8, 2.0))).items[0].movie_id == 3


def test_reasons_name_a_movie_the_user_liked_with_the_true_count(rankers):
    ratings = tiny_ratings()
    liked = ratings[ratings[schema.COL_RATING] >= schema.LIKED_RATING]
    fans = liked.groupby(schema.COL_MOVIE)[schema.COL_USER].agg(set)
    raters = ratings.groupby(schema.COL_MOVIE)[schema.COL_USER].nunique()
    user_liked = {1: "Movie 1 (2001)", 5: "Movie 5 (2005)"}
    for name in ("ease", "ease-recent", "sasrec"):
        ranking = rankers[name].rank(_ctx(99, (1, 4.0), (5, 4.5), (6, 2.0)))
        for item in ranking.items:
            match = re.fullmatch(r"liked by (\d+) people who also liked (.+)", item.reason)
            if match:
                source = next(m for m, title in user_liked.items() if title == match[2])
                assert int(match[1]) == len(fans[source] & fans.get(item.movie_id, set())) > 0, (name, item)
            else:
                assert item.reason == f"rated by {raters[item.movie_id]} people here", (name, item)
