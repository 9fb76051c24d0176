"""Choice samples by time (Spark), with candidates from a real base ranker trained without the validation targets."""
import pandas as pd
import pytest

from sparrow_llm.registry import make_ranker
from sparrow_llm.rankers.palr.samples import MIN_PRIOR, TRAIN, VALID, SampleOptions, base_folder, build_samples
from sparrow_llm.schema import LIKED_RATING, RATINGS_CSV

from tests.rankers.palr.conftest import tiny_settings


@pytest.fixture(scope="module")
def built(spark, tiny_folder, tiny_model, tmp_path_factory):
    settings = tiny_settings(tiny_folder, tiny_model, tmp_path_factory.mktemp("samples"))
    bases = []

    def popularity(s):  # a real registered base, trained on the folder it is given
        bases.append(s.host.data_webroot)
        return make_ranker("popularity", s)

    samples = build_samples(settings, SampleOptions(k=5, train_per_user=3), base_for=popularity, progress=False)
    return settings, samples, bases


def test_samples_follow_time_and_hold_no_validation_future(built, tiny_folder):
    settings, samples, _ = built
    ratings = pd.read_csv(tiny_folder / RATINGS_CSV).sort_values(["userId", "timestamp", "movieId"], kind="stable")
    valid_at = {}
    for s in (s for s in samples if s.split == VALID):
        rows = ratings[ratings["userId"] == s.user_id]
        liked = rows[(rows["rating"] >= LIKED_RATING)]
        eligible = [t for t in liked["timestamp"] if (rows["timestamp"] < t).sum() >= MIN_PRIOR]
        assert rows[rows["movieId"] == s.target]["timestamp"].max() == max(eligible)  # the user's last target
        valid_at[s.user_id] = max(eligible)
    assert len(valid_at) >= 20  # most tiny users have one
    for s in samples:
        rows = ratings[ratings["userId"] == s.user_id]
        at = rows[rows["movieId"] == s.target]["timestamp"].max()
        before = rows[rows["timestamp"] < at]
        assert [r.movie.movie_id for r in s.history] == before["movieId"].tolist()[-50:]  # everything before it
        assert len(before) >= MIN_PRIOR and len(s.candidates) == 5
        if s.split == TRAIN:
            assert at < valid_at.get(s.user_id, float("inf")) and s.target_in and s.label >= 0
        else:
            assert s.target_in == (s.label >= 0)
    per_user = pd.Series([s.user_id for s in samples if s.split == TRAIN]).value_counts()
    assert per_user.max() == 3


def test_the_base_is_trained_without_the_validation_targets(built, tiny_folder):
    settings, samples, bases = built
    folder = base_folder(settings, [])  # kept: the folder the samples' base was trained on
    assert bases == [folder]
    full = pd.read_csv(tiny_folder / RATINGS_CSV)
    cut = pd.read_csv(folder / RATINGS_CSV)
    for s in (s for s in samples if s.split == VALID):
        at = full[(full["userId"] == s.user_id) & (full["movieId"] == s.target)]["timestamp"].max()
        mine = cut[cut["userId"] == s.user_id]
        assert (mine["timestamp"] < at).all() and len(mine) == (full[full["userId"] == s.user_id]["timestamp"] < at).sum()
    valid_users = {s.user_id for s in samples if s.split == VALID}
    others = full[~full["userId"].isin(valid_users)]
    assert len(cut[~cut["userId"].isin(valid_users)]) == len(others)
    # Validation lists are the base's order, by its scores; training lists are shuffled with the target in.
    for s in (s for s in samples if s.split == VALID):
        assert list(s.base_scores) == sorted(s.base_scores, reverse=True)
