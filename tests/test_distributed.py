"""Data-parallel training through PySpark's TorchDistributor: 2 processes (DDP, gloo) train a tiny model to
the same weights as 1 process with the same global batch and seed."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import TensorDataset

from sparrow_llm.config import REPO_ROOT
from sparrow_llm.distributed import process_group, run_data_parallel, sharded_loader
from sparrow_llm.spark import spark_session

GLOBAL_BATCH, EPOCHS, SEED = 16, 3, 7


ROWS = 96


def train_tiny(global_batch: int, epochs: int, seed: int) -> tuple[dict[str, torch.Tensor], int]:
    """Runs in every process TorchDistributor starts: an MLP on a seeded regression, plain SGD. Returns the
    weights and the rows this process trained on."""
    with process_group() as (rank, world):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(ROWS, 8, generator=generator)
        y = (x[:, :1] * 2 - x[:, 1:2]).tanh() + 0.1 * torch.randn(ROWS, 1, generator=generator)
        torch.manual_seed(seed)  # the same initial weights in every process (DDP also sends rank 0's)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        loader = sharded_loader(TensorDataset(x, y), global_batch, rank, world, seed)
        seen = 0
        for epoch in range(epochs):
            loader.sampler.set_epoch(epoch)
            for xb, yb in loader:
                seen += len(xb)
                optimizer.zero_grad()
                nn.functional.mse_loss(ddp(xb), yb).backward()
                optimizer.step()
        return {name: value.detach().clone() for name, value in model.state_dict().items()}, seen


@pytest.fixture(scope="module")
def spark():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = spark_session("local[1]", app="sparrow-llm-tests-distributed")
    yield session
    session.stop()


def test_two_processes_train_the_same_weights_as_one(spark, monkeypatch):
    # torchrun's processes unpickle train_tiny by reference: they must import tests.test_distributed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH")))))
    one, rows_one = run_data_parallel(train_tiny, GLOBAL_BATCH, EPOCHS, SEED, processes=1, spark=spark)
    two, rows_two = run_data_parallel(train_tiny, GLOBAL_BATCH, EPOCHS, SEED, processes=2, spark=spark)
    assert (rows_one, rows_two) == (ROWS * EPOCHS, ROWS * EPOCHS // 2)  # each of the 2 took half of every batch
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)
    torch.manual_seed(SEED)
    untrained = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).state_dict()
    assert max((one[n] - untrained[n]).abs().max().item() for n in one) > 1e-2  # it did train


def test_the_global_batch_must_divide_among_the_processes():
    with pytest.raises(ValueError, match="must divide among 3 processes"):
        sharded_loader(TensorDataset(torch.zeros(8, 1)), 16, 0, 3, SEED)
