"""Serving: scores as of now for any user and movie, batched, from a checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

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

    prefix_dir = ClickPrompt(tiny_config.replace(fusion="prefix"), tiny_data.space).save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="CTR logit"):
        ClickPromptScorer(prefix_dir)
    ctr_dir = ClickPrompt(tiny_config.replace(fusion="ctr"), tiny_data.space).save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match="no PLM"):
        ClickPromptScorer(ctr_dir, use_plm=True)


def test_many_users_at_once_score_as_one_at_a_time(scorer, movies, tiny_ratings):
    users = sorted(tiny_ratings["userId"].unique())[:4]
    histories = [tiny_ratings[tiny_ratings["userId"] == u] for u in users]
    as_objects = [UserRating(int(m), float(r), int(t))
                  for m, r, t in histories[1][["movieId", "rating", "timestamp"]].to_numpy()]
    queries = [
        (int(users[0]), histories[0], [1, 2, 3, 32, 50, 10 ** 9]),
        (int(users[1]), as_objects, [50, 1, 296, 318]),
        (None, [], [2, 10 ** 9]),  # unknown user without history
        (int(users[2]), histories[2], []),  # nothing to score
        (int(users[0]), histories[3], [1, 2, 3]),  # the same id again, with another history: kept apart
        (None, histories[3], [7, 1, 2]),  # the id from the rows
    ]
    batched = scorer.score_many(queries, movies)
    assert len(batched) == len(queries) and [len(b) for b in batched] == [len(c) for _, _, c in queries]
    for (user, history, candidates), got in zip(queries, batched):
        np.testing.assert_allclose(got, scorer.score(history, candidates, movies, user_id=user), rtol=0, atol=1e-6)
    assert not np.allclose(batched[0][:3], batched[4])  # another history, other scores
    assert scorer.score_many([], movies) == []


@pytest.mark.parametrize("changes", [{"backbone": "deepfm"}, {"mlp_dims": ()}], ids=["deepfm", "no-mlp"])
def test_many_users_with_other_ctr_models(changes, tiny_config, tiny_data, movies, tiny_ratings, tmp_path):
    """DeepFM splits per side too (`pairs.PairScorer`); a DCNv2 without an MLP runs its whole forward per pair."""
    from sparrow_llm.rankers.clickprompt.model import ClickPrompt

    model = ClickPrompt(tiny_config.replace(fusion="ctr", **changes), tiny_data.space)
    torch.manual_seed(0)
    with torch.no_grad():  # away from the near-zero initial weights, so that every term counts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    scorer = ClickPromptScorer(model.save_pretrained(tmp_path / "model"))
    users = sorted(tiny_ratings["userId"].unique())[:3]
    queries = [(int(u), tiny_ratings[tiny_ratings["userId"] == u], [1, 2, 50, 296, 10 ** 9]) for u in users]
    for (user, history, candidates), got in zip(queries, scorer.score_many(queries, movies)):
        want = scorer.score(history, candidates, movies, user_id=user)
        assert np.ptp(want) > 0.01
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
