"""Features as of a moment: a rating at or after a query's cut never changes its features."""
import numpy as np
import pandas as pd

from sparrow_llm.domain import UserRating
from sparrow_llm.rankers.ltr.features import (ADAPTED, TEXT_KINDS, TEXT_SOURCES, FeatureSources, Query, Vectors, adapt,
                                              feature_names, features)
from sparrow_llm.rankers.ltr.knowledge import sources_of
from sparrow_llm.rankers.retrieval.interactions import Catalogue
from sparrow_llm.rankers.retrieval.linear import fit_popularity
from sparrow_llm.rankers.retrieval.interactions import History


def _sources(ratings, movies, texts=None):
    catalogue = Catalogue.from_movies(movies)
    popularity = fit_popularity([History.build(catalogue, [m], [4.0]) for m in movies["movieId"]], catalogue)
    return FeatureSources.build(catalogue, {"popularity": popularity}, ratings, movies, {}, texts)


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


def test_text_features_compare_with_the_recent_liked_disliked_and_rated(ratings, movies):
    ids = [int(m) for m in movies["movieId"]]
    rng = np.random.default_rng(0)
    texts = {source: {m: rng.normal(size=8) for m in ids} for source in TEXT_SOURCES}
    names = [f"{source}_{kind}" for source in TEXT_SOURCES for kind in TEXT_KINDS]
    liked, disliked, other = ids[:3]
    history = (UserRating(disliked, 1.0, 1), UserRating(liked, 5.0, 2))
    query = [Query(1, history, (liked, disliked, other), 3.0)]
    frame, _ = features(_sources(ratings, movies, texts), query, names)
    for source in TEXT_SOURCES:
        mean, top, bad, rated = (frame[f"{source}_{k}"].to_numpy() for k in TEXT_KINDS)
        assert np.isclose(mean[0], 1.0) and np.isclose(top[0], 1.0) and top[2] < 1.0
        assert np.isclose(bad[1], 1.0) and bad[2] < 1.0
        # Rated 5 and 1 (mean 3): the liked movie scores (1 - cos) / 2 above 0, the disliked one as far below.
        assert rated[0] > 0 > rated[1] and np.isclose(rated[0], -rated[1])
    # The sources' vectors are centred: a common offset added to every movie changes nothing.
    shifted = {s: {m: v + 100.0 for m, v in vectors.items()} for s, vectors in texts.items()}
    again, _ = features(_sources(ratings, movies, shifted), query, names)
    np.testing.assert_allclose(again[names], frame[names], atol=1e-4)


def test_without_a_disliked_movie_its_feature_is_missing(ratings, movies):
    ids = [int(m) for m in movies["movieId"]]
    texts = {"knowledge": {m: np.random.default_rng(m).normal(size=8) for m in ids}}
    query = [Query(1, (UserRating(ids[0], 5.0, 1),), (ids[1],), 2.0)]
    frame, _ = features(_sources(ratings, movies, texts), query, ["knowledge_disliked_cos", "knowledge_rated_cos"])
    assert frame[["knowledge_disliked_cos", "knowledge_rated_cos"]].isna().all(axis=None)


def test_the_adapted_knowledge_follows_the_collaborative_item_space():
    rng = np.random.default_rng(0)
    collaborative = rng.normal(size=(40, 4))
    ease = collaborative @ collaborative.T  # items alike in the ratings' space score each other high
    # Knowledge vectors that carry the collaborative place among noise dimensions, one movie without a vector.
    matrix = np.hstack([collaborative, 0.3 * rng.normal(size=(40, 12))]).astype(np.float32)
    has = np.arange(40) != 39
    adapted = adapt(Vectors(matrix * has[:, None], has), ease)
    assert (adapted.has == has).all() and not adapted.matrix[39].any()
    cos = adapted.matrix[:39] @ adapted.matrix[:39].T
    unit = collaborative[:39] / np.linalg.norm(collaborative[:39], axis=1, keepdims=True)
    truth = unit @ unit.T
    raw = matrix[:39] / np.linalg.norm(matrix[:39], axis=1, keepdims=True)
    # Closer to the collaborative cosines than the raw knowledge vectors are.
    assert np.abs(cos - truth).mean() < np.abs(raw @ raw.T - truth).mean()
    assert sources_of([f"{ADAPTED}_mean_cos"]) == ("knowledge",)
