"""ClickPrompt fixtures: a tiny slice of the host's fixture data (`fixture_webroot`, tests/conftest.py)
prepared once, tiny models trained once.

MiniLM itself is loaded once per process by `sparrow_llm.clickprompt.model` (every model gets a copy).
"""
from __future__ import annotations

import pandas as pd
import pytest

TINY_USERS = 40  # users kept for the training tests: 1,657 ratings


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny tensors: handing work to a second thread costs more than it saves (on the 2-vCPU dev VM,
    two threads made a MiniLM training step 2.5x slower and a LayerNorm 25x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)




@pytest.fixture(scope="session")
def tiny_ratings(ratings) -> pd.DataFrame:
    users = sorted(ratings["userId"].unique())[:TINY_USERS]
    return ratings[ratings["userId"].isin(users)].reset_index(drop=True)


@pytest.fixture(scope="session")
def tiny_config():
    from sparrow_llm.rankers.clickprompt.configuration import ClickPromptConfig

    return ClickPromptConfig(embed_dim=4, mlp_dims=(16,), cross_layers=1, num_prompt=2, prompt_hidden=16,
                             max_text_len=32, fusion="prefix_add", seed=7)


@pytest.fixture(scope="session")
def tiny_options():
    from sparrow_llm.rankers.clickprompt.train import TrainOptions

    return TrainOptions(epochs=2, batch_size=16, max_steps_per_epoch=3, eval_batch_size=128, progress=False)


@pytest.fixture(scope="session")
def tiny_data(tiny_ratings, movies, tiny_config):
    from sparrow_llm.rankers.clickprompt.train import prepare_data

    return prepare_data(tiny_ratings, movies, tiny_config)


@pytest.fixture(scope="session")
def pretrained(tiny_data, tiny_config, tiny_options, tmp_path_factory):
    """A PA-MLM checkpoint of the tiny config."""
    from sparrow_llm.rankers.clickprompt.train import pretrain

    return pretrain(tiny_config, tiny_data, tmp_path_factory.mktemp("pretrain"), tiny_options)


@pytest.fixture(scope="session")
def prefix_add_run(pretrained, tiny_data, tiny_config, tiny_options, tmp_path_factory):
    """ClickPrompt with the PLM (prefix_add), fine-tuned from the PA-MLM checkpoint."""
    from sparrow_llm.rankers.clickprompt.train import finetune

    return finetune(tiny_config, tiny_data, tmp_path_factory.mktemp("prefix_add"), tiny_options,
                    init_from=pretrained.checkpoint)


def perturbed_future(ratings: pd.DataFrame, movie_ids, n: int) -> tuple[int, pd.DataFrame]:
    """(t, ratings with every rating at or after t changed and `n` new ratings at t and later, many exactly
    at t): the leakage tests' future. t is a second in which one user rated several movies."""
    import numpy as np

    from sparrow_llm.schema import COL_MOVIE, COL_RATING, COL_TIMESTAMP, COL_USER

    ties = ratings[ratings.duplicated([COL_USER, COL_TIMESTAMP], keep=False)]
    t = int(ties[COL_TIMESTAMP].sort_values().iloc[len(ties) // 2])
    rng = np.random.default_rng(1)
    future = ratings[COL_TIMESTAMP] >= t
    perturbed = ratings.copy()
    perturbed.loc[future, COL_RATING] = rng.choice(np.arange(1, 11) / 2, size=int(future.sum()))
    extra = pd.DataFrame({
        COL_USER: rng.choice(ratings[COL_USER].unique(), n),
        COL_MOVIE: rng.choice(np.asarray(movie_ids), n),
        COL_RATING: rng.choice(np.arange(1, 11) / 2, n),
        COL_TIMESTAMP: t + rng.integers(0, 3, n) * rng.integers(0, 10 ** 7, n),
    })
    assert (extra[COL_TIMESTAMP] == t).sum() > n // 7
    return t, pd.concat([perturbed, extra], ignore_index=True).drop_duplicates([COL_USER, COL_MOVIE, COL_TIMESTAMP])
