import numpy as np
import pytest

from sparrow_llm.domain import MovieMeta, UserRating
from sparrow_llm.domain import UserContext
from sparrow_llm.rankers.recent import RecentRanker
from sparrow_llm.registry import make_ranker
from sparrow_llm.config import Settings


def _movie(mid, emb, title=None, genres=("Drama",)):
    return MovieMeta(mid, title or f"Movie {mid}", 1990 + mid % 30, tuple(genres), 3.5, 10,
                     tuple(emb) if emb is not None else None)


def _ctx(ratings, candidates, movies, user=1):
    return UserContext(user, tuple(UserRating(m, r, t) for m, r, t in ratings), tuple(candidates),
                       {m.movie_id: m for m in movies})


def test_recent_follows_recent_taste_not_all_history():
    # Long ago the user liked "x" movies; recently only "y" movies. The host's all-history mean
    # would mix both; `recent` (n=2) must put the y-like candidate first.
    movies = [_movie(1, [1, 0]), _movie(2, [1, 0.1]), _movie(3, [1, -0.1]),  # old x-likes
              _movie(4, [0, 1], "Recent Y"), _movie(5, [0.1, 1]),             # recent y-likes
              _movie(10, [1, 0.05]), _movie(11, [0.05, 1]), _movie(12, None)]  # candidates
    ratings = [(1, 5, 100), (2, 5, 110), (3, 4.5, 120), (4, 4, 900), (5, 4.5, 1000)]
    ranking = RecentRanker(recent_n=2).rank(_ctx(ratings, [10, 11, 12, 1], movies))
    ids = [i.movie_id for i in ranking.items]
    assert ids == [11, 10]  # rated movie 1 and emb-less movie 12 left out
    assert ranking.items[0].score > ranking.items[1].score
    assert "Recent Y" in ranking.items[0].reason or "Movie 5" in ranking.items[0].reason
    assert ranking.meta["seeds"] == [5, 4]


def test_recent_ignores_disliked_and_unknown_movies():
    movies = [_movie(1, [1, 0]), _movie(2, [0, 1]), _movie(10, [1, 0]), _movie(11, [0, 1])]
    # 2 is disliked (2.0), 99 is unknown to the host: the seed is movie 1 only.
    ratings = [(1, 4.0, 1), (2, 2.0, 2), (99, 5.0, 3)]
    ranking = RecentRanker().rank(_ctx(ratings, [11, 10], movies))
    assert [i.movie_id for i in ranking.items] == [10, 11]
    assert np.isclose(ranking.items[0].score, 1.0)


def test_recent_gives_nothing_without_liked_history():
    movies = [_movie(1, [1, 0]), _movie(10, [1, 0])]
    assert RecentRanker().rank(_ctx([(1, 1.0, 1)], [10], movies)) is None
    assert RecentRanker().rank(_ctx([], [10], movies)) is None


def test_registry_names_known_models():
    assert make_ranker("recent", Settings()).name == "recent"
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        make_ranker("nope", Settings())
