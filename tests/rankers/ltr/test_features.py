"""Features as of a moment: a rating at or after a query's cut never changes its features."""
import numpy as np
import pandas as pd

from sparrow_llm.domain import UserRating
from sparrow_llm.rankers.ltr.features import FeatureSources, Query, feature_names, features
from sparrow_llm.rankers.retrieval.interactions import Catalogue
from sparrow_llm.rankers.retrieval.linear import fit_popularity
from sparrow_llm.rankers.retrieval.interactions import History


def _sources(ratings, movies, knowledge=None):
    catalogue = Catalogue.from_movies(movies)
    popularity = fit_popularity([History.build(catalogue, [m], [4.0]) for m in movies["movieId"]], catalogue)
    return FeatureSources.build(catalogue, {"popularity": popularity}, ratings, movies, {}, knowledge)


def test_ratings_after_the_cut_change_no_feature(ratings, movies):
    user = ratings[ratings["userId"] == ratings["userId"].iloc[0]].sort_values("timestamp")
    cut = float(user["timestamp"].iloc[10])
    history = tuple(UserRating(int(r.movieId), float(r.rating), int(r.timestamp))
                    for r in user.itertuples() if r.timestamp < cut)
    candidates = tuple(int(m) for m in ratings["movieId"].value_counts().index[:30])
    query = [Query(1, history, candidates, cut)]
    names = [n for n in feature_names(False) if not n.startswith(("ease", "popularity"))]
    before, _ = features(_sources(ratings, movies), query, names)
    # Everything at or after the cut changed: new ratings of the candidates, and the old ones rated 0.5.
    later = ratings.copy()
    later.loc[later["timestamp"] >= cut, "rating"] = 0.5
    extra = pd.DataFrame({"userId": 10**6, "movieId": list(candidates), "rating": 5.0, "timestamp": int(cut)})
    after, _ = features(_sources(pd.concat([later, extra]), movies), query, names)
    pd.testing.assert_frame_equal(before, after)
    # ...while a rating before the cut does change the counts.
    earlier = extra.assign(timestamp=int(cut) - 1)
    moved, _ = features(_sources(pd.concat([ratings, earlier]), movies), query, names)
    assert (moved["item_count"] == before["item_count"] + 1).all()


def test_knowledge_features_compare_with_recent_liked(ratings, movies):
    ids = movies["movieId"].to_numpy()
    rng = np.random.default_rng(0)
    knowledge = {int(m): rng.normal(size=8) for m in ids}
    liked = int(ids[0])
    history = (UserRating(liked, 5.0, 1),)
    query = [Query(1, history, (liked, int(ids[1])), 2.0)]
    frame, _ = features(_sources(ratings, movies, knowledge), query, ["knowledge_mean_cos", "knowledge_max_cos"])
    assert np.isclose(frame["knowledge_max_cos"].iloc[0], 1.0) and frame["knowledge_max_cos"].iloc[1] < 1.0
