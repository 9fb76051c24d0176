"""ClickPrompt trained to rank: sampled non-clicks, the held-out validation, early stopping on its NDCG."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparrow_llm.datafolder import MIN_HISTORY, leave_last_out
from sparrow_llm.rankers.clickprompt.ranking import (
    NegativeSampling, draw_negatives, prepare_ranking_data, ranking_samples, with_text,
)
from sparrow_llm.rankers.clickprompt.samples import build_samples
from sparrow_llm.rankers.clickprompt.schema import COL_LABEL, COL_MOVIE, COL_TIMESTAMP, COL_USER, SAMPLE_COLUMNS
from sparrow_llm.rankers.clickprompt.train import finetune


@pytest.fixture(scope="module")
def ranking_data(tiny_ratings, movies, tiny_config):
    return prepare_ranking_data(tiny_ratings, movies, NegativeSampling(negatives=2, alpha=0.5, seed=3), tiny_config)


def test_negatives_are_movies_the_user_had_not_rated_by_then(tiny_ratings, movies):
    sampling = NegativeSampling(negatives=3, alpha=0.5, seed=1)
    drawn = draw_negatives(tiny_ratings, tiny_ratings, movies[COL_MOVIE].to_numpy(), sampling)
    assert len(drawn) == 3 * len(tiny_ratings) and drawn[COL_MOVIE].isin(movies[COL_MOVIE]).all()
    first = tiny_ratings.groupby([COL_USER, COL_MOVIE])[COL_TIMESTAMP].min()
    seen = first.reindex(pd.MultiIndex.from_frame(drawn[[COL_USER, COL_MOVIE]])).to_numpy()
    assert (np.isnan(seen) | (seen > drawn[COL_TIMESTAMP].to_numpy())).all()
    assert (seen > drawn[COL_TIMESTAMP].to_numpy()).any()  # a movie rated later is a fair non-click now
    pd.testing.assert_frame_equal(draw_negatives(tiny_ratings, tiny_ratings, movies[COL_MOVIE].to_numpy(), sampling),
                                  drawn)  # seeded
    # alpha 1 draws popular movies more often than alpha 0 does.
    counts = tiny_ratings[COL_MOVIE].value_counts()
    mean_count = {a: counts.reindex(draw_negatives(tiny_ratings, tiny_ratings, movies[COL_MOVIE].to_numpy(),
                                                   NegativeSampling(3, a, 1))[COL_MOVIE]).fillna(0).mean()
                  for a in (0.0, 1.0)}
    assert mean_count[1.0] > 2 * mean_count[0.0]
    with pytest.raises(ValueError, match="alpha"):
        NegativeSampling(alpha=-1)


def test_ranking_samples_are_every_rating_as_a_click_and_its_non_clicks(tiny_ratings, movies):
    samples = ranking_samples(tiny_ratings, movies, NegativeSampling(negatives=2, seed=1))
    assert tuple(samples.columns) == SAMPLE_COLUMNS
    clicks, non_clicks = samples[samples[COL_LABEL] == 1], samples[samples[COL_LABEL] == 0]
    assert len(clicks) == len(tiny_ratings) and len(non_clicks) == 2 * len(tiny_ratings)
    assert non_clicks["rating"].isna().all() and clicks["rating"].notna().all()
    # A click's features are the rating task's, whatever its rating (the label alone differs).
    rated = build_samples(tiny_ratings, movies).drop(columns=COL_LABEL)
    pd.testing.assert_frame_equal(clicks.drop(columns=COL_LABEL).reset_index(drop=True), rated, check_like=True)
    assert (samples[COL_TIMESTAMP].diff().dropna() >= 0).all()


def test_validation_holds_out_each_users_last_liked_rating(ranking_data, tiny_ratings):
    kept, holdouts = leave_last_out(tiny_ratings)
    eligible = [h for h in holdouts.values() if h.history_size >= MIN_HISTORY]
    validation = ranking_data.validation
    assert 0 < len(validation.targets) <= len(eligible)
    assert set(validation.targets) <= {h.movie_id for h in eligible}
    for (user, history, candidates), target in zip(validation.queries, validation.targets):
        assert target in candidates and not set(history[COL_MOVIE]) & set(candidates)
        assert history[COL_TIMESTAMP].max() < holdouts[user].timestamp
    valid = ranking_data.data.split.valid
    assert set(valid.loc[valid[COL_LABEL] == 1, COL_MOVIE]) <= set(validation.targets)
    # Training never sees a held-out rating, as a click or in a feature.
    train = ranking_data.data.split.train
    assert len(train[train[COL_LABEL] == 1]) == len(kept)


def test_finetune_stops_on_the_validation_ndcg(ranking_data, tiny_config, tiny_options, tmp_path):
    fit = finetune(tiny_config.replace(fusion="ctr"), ranking_data.data, tmp_path, tiny_options,
                   validate=ranking_data.validate)
    ndcgs = [e["valid_ndcg"] for e in fit.history]
    assert all(0.0 <= x <= 1.0 for x in ndcgs) and all(0.0 <= e["valid_auc"] <= 1.0 for e in fit.history)
    assert fit.best == int(np.argmax(ndcgs))
    assert ranking_data.validation(fit.model)["valid_ndcg"] == pytest.approx(ndcgs[fit.best])


def test_text_only_for_the_rows_pamlm_reads(ranking_data, tiny_config):
    data = ranking_data.data
    assert not data.train.has_text
    texts = with_text(data, tiny_config, train_rows=20, valid_rows=None, seed=1)
    assert texts.train.has_text and len(texts.train) == 20 and len(texts.valid) == len(data.valid)
