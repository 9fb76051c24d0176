"""The learned stage end to end on a small folder: samples by time, training, the keyed folder, serving."""
import dataclasses

import pandas as pd
import pytest

from sparrow_llm.config import Settings
from sparrow_llm.domain import UserContext, UserRating
from sparrow_llm.rankers.ltr.knowledge import knowledge_dir, load_knowledge, run_knowledge
from sparrow_llm.rankers.ltr.ranker import LtrRanker, ltr_ranker
from sparrow_llm.rankers.ltr.samples import (COL_HISTORY, COL_LABEL, COL_SPLIT, COL_TARGET, FULL, LtrOptions, TRAIN,
                                             VALID, build_groups)
from sparrow_llm.rankers.ltr.features import feature_names
from sparrow_llm.rankers.ltr.train import TRAINING_FILE, model_dir, read_config, train_model
from sparrow_llm.schema import ITEM_EMB_CSV, MOVIES_CSV, RATINGS_CSV

USERS = 30


@pytest.fixture(scope="module")
def small(ratings, movies, fixture_webroot, tmp_path_factory):
    """The first 30 fixture users and only the movies they rated (EASE's cost grows with the catalogue)."""
    folder = tmp_path_factory.mktemp("ltr-data")
    mine = ratings[ratings["userId"].isin(sorted(ratings["userId"].unique())[:USERS])]
    (folder / RATINGS_CSV).parent.mkdir(parents=True)
    mine.to_csv(folder / RATINGS_CSV, index=False)
    movies[movies["movieId"].isin(mine["movieId"])].to_csv(folder / MOVIES_CSV, index=False)
    (folder / ITEM_EMB_CSV).parent.mkdir(parents=True)
    (folder / ITEM_EMB_CSV).symlink_to(fixture_webroot / ITEM_EMB_CSV)
    return Settings().replace(host={"data_dir": folder, "work_dir": tmp_path_factory.mktemp("ltr-work")})


OPTIONS = LtrOptions(k=20, train_per_user=1, valid_users=15, short_histories=(3,))


@pytest.fixture(scope="module")
def trained(small, spark):
    return train_model(small, llm=False, options=OPTIONS, progress=False)


def test_training_groups_hold_no_validation_target(small, spark, trained):
    groups = build_groups(small, OPTIONS, feature_names(False), base="ease-recent", texts=None, spark=spark,
                          progress=False)
    ratings = pd.read_csv(small.host.data_webroot / RATINGS_CSV)
    at = ratings.groupby(["userId", "movieId"])["timestamp"].max()
    targets = groups[groups[COL_LABEL] == 1]
    valid = {u: at[(u, m)] for u, m in targets[targets[COL_SPLIT] == VALID][["userId", "movieId"]].itertuples(index=False)}
    assert 0 < len(valid) <= 15
    train = targets[targets[COL_SPLIT] == TRAIN]
    assert len(train) and all(at[(u, m)] < valid.get(u, float("inf")) for u, m in train[["userId", "movieId"]].itertuples(index=False))
    # Every training group has its target in the window, one row labelled.
    assert (groups[groups[COL_SPLIT] == TRAIN].groupby("group")[COL_LABEL].sum() == 1).all()
    # The cold-start copies read the last 3 ratings only: the same validation users and targets (kept whole),
    # a history of at most 3.
    short, full = groups[groups[COL_HISTORY] == 3], groups[groups[COL_HISTORY] == FULL]
    assert short["user_count"].max() == 3 and full["user_count"].max() > 3
    pairs = [set(g.loc[g[COL_SPLIT] == VALID, ["userId", COL_TARGET]].itertuples(index=False)) for g in (short, full)]
    assert pairs[0] == pairs[1] and len(pairs[0]) >= len(valid)


def test_a_tiny_training_run_publishes_its_folder(small, trained):
    directory, fresh = trained
    assert fresh and directory == model_dir(small, False, OPTIONS)
    config = read_config(directory)
    assert config.features == feature_names(False) and config.k == 20 and config.base == "ease-recent"
    assert (directory / TRAINING_FILE).is_file()
    assert train_model(small, llm=False, options=OPTIONS, progress=False) == (directory, False)


def test_the_folder_key_follows_the_base_the_features_and_the_options(small):
    options = LtrOptions()
    keys = {model_dir(small, False, options), model_dir(small.replace(base="ease"), False, options),
            model_dir(small, False, LtrOptions(k=20)), model_dir(small, False, LtrOptions(short_histories=(3,)))}
    assert len(keys) == 4


def test_the_llm_feature_set_has_its_own_folder(small, tiny_model):
    with_llm = small.replace(llm={"local_model": tiny_model})
    assert model_dir(with_llm, True, LtrOptions()) != model_dir(with_llm, False, LtrOptions())


def test_at_weight_zero_the_ranker_serves_the_base_order(small, trained):
    ranker = ltr_ranker(small, None, options=OPTIONS)  # reads the folder trained above
    assert isinstance(ranker, LtrRanker)
    ratings = pd.read_csv(small.host.data_webroot / RATINGS_CSV)
    user = ratings[ratings["userId"] == ratings["userId"].iloc[0]]
    history = tuple(UserRating(int(r.movieId), float(r.rating), int(r.timestamp)) for r in user.itertuples())
    window = tuple(int(m) for m in ratings["movieId"].unique() if m not in set(user["movieId"]))[:20]
    ctx = UserContext(1, history, window, {m: None for m in window + tuple(r.movie_id for r in history)},
                      base_scores={m: 1.0 - i / 20 for i, m in enumerate(window)})
    zero = dataclasses.replace(ranker.config, calibration={**ranker.config.calibration, "weight": 0.0})
    ranker.config, ranker.weight = zero, 0.0
    assert [i.movie_id for i in ranker.rank(ctx).items] == list(window)
    ranker.weight = 1.0  # the model's own order: every window movie, scored, with reasons from the data
    ranked = ranker.rank(ctx)
    assert sorted(i.movie_id for i in ranked.items) == sorted(window) and ranked.meta["scored"] == 20
    assert any(i.reason for i in ranked.items)


def test_the_knowledge_job_resumes(small, tiny_model, spark):
    settings = small.replace(llm={"local_model": tiny_model, "models_dir": small.host.work_dir / "models",
                                  "local_threads": 1})
    first = run_knowledge(settings, spark=spark, progress=False)
    assert first.computed == first.chunks > 0
    second = run_knowledge(settings, spark=spark, progress=False)
    assert second.computed == 0 and second.chunks == first.chunks
    vectors = load_knowledge(knowledge_dir(settings))
    assert len(vectors) == first.movies
