"""Serving: scores as of now for any user and movie, batched, from a checkpoint."""
from __future__ import annotations

import numpy as np
import pytest

from sparrow_llm.domain import UserRating
from sparrow_llm.rankers.clickprompt.score import ClickPromptScorer


@pytest.fixture(scope="module")
def scorer(prefix_add_run):
    return ClickPromptScorer(prefix_add_run.checkpoint)


def test_user_without_history_and_unseen_movie(scorer, movies, tiny_data):
    unseen = 10 ** 9
    assert unseen not in tiny_data.space.vocabs["movie"]
    scores = scorer.score([], [unseen, 1, 2], movies)
    assert scores.shape == (3,) and scores.dtype == np.float64
    assert np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()
    assert scorer.score([], [], movies).shape == (0,)


def test_known_user_scores_depend_on_history_and_batching(scorer, prefix_add_run, movies, tiny_ratings):
    user = int(tiny_ratings["userId"].iloc[0])
    history = tiny_ratings[tiny_ratings["userId"] == user]
    candidates = [1, 2, 3, 32, 50, 10 ** 9]
    scores = scorer.score(history, candidates, movies)
    assert not np.allclose(scores, scorer.score([], candidates, movies))
    objects = [UserRating(int(m), float(r), int(t)) for m, r, t in history[["movieId", "rating", "timestamp"]].to_numpy()]
    np.testing.assert_allclose(scorer.score(objects, candidates, movies, user_id=user), scores, rtol=1e-6)
    small_batches = ClickPromptScorer(prefix_add_run.checkpoint, batch_size=2)
    np.testing.assert_allclose(small_batches.score(history, candidates, movies), scores, rtol=1e-5)
    with pytest.raises(ValueError, match="one user"):
        scorer.score(tiny_ratings, candidates, movies)


def test_plm_scoring_and_mode_checks(prefix_add_run, tiny_config, tiny_data, movies, tmp_path):
    with_plm = ClickPromptScorer(prefix_add_run.checkpoint, use_plm=True)
    scores = with_plm.score([], [1, 10 ** 9], movies)
    assert np.isfinite(scores).all()
    assert hasattr(with_plm.model, "plm")
    assert not hasattr(ClickPromptScorer(prefix_add_run.checkpoint).model, "plm")
    from sparrow_llm.rankers.clickprompt.model import ClickPrompt

    prefix_dir = ClickPrompt(tiny_config.replace(fusion="prefix"), tiny_data.space).save_checkpoint(tmp_path / "p")
    with pytest.raises(ValueError, match="CTR logit"):
        ClickPromptScorer(prefix_dir)
    ctr_dir = ClickPrompt(tiny_config.replace(fusion="ctr"), tiny_data.space).save_checkpoint(tmp_path / "c")
    with pytest.raises(ValueError, match="no PLM"):
        ClickPromptScorer(ctr_dir, use_plm=True)
