"""Data-parallel training through PySpark's own `TorchDistributor`: no process launcher of ours.

`run_data_parallel(train_fn, *args, processes=N)` runs `train_fn(*args)` in N processes (torchrun underneath):
on the driver's machine with `local_mode=True`, or as a barrier stage of N tasks on the session's cluster
(`spark://...`) with `local_mode=False`. It returns what rank 0's call returns. Inside `train_fn`:

    with process_group() as (rank, world):             # gloo over TCP: CPUs, any cluster
        loader = sharded_loader(dataset, batch, rank, world, seed)
        model = DistributedDataParallel(model)          # averages the gradients of every step

`sharded_loader` gives each process its slice of every global batch (torch's `DistributedSampler`), so N
processes with `batch // N` rows each take the same steps as one process with `batch` rows: the training
is the same, only faster (tests/test_distributed.py checks the weights).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from pyspark.ml.torch.distributor import TorchDistributor
from pyspark.sql import SparkSession
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .spark import session

__all__ = ["run_data_parallel", "process_group", "sharded_loader"]


def run_data_parallel(train_fn: Callable[..., Any], *args: Any, processes: int = 2, local_mode: bool = True,
                      spark: SparkSession | None = None, master: str = "local[*]") -> Any:
    """`train_fn(*args)` in `processes` processes, each a rank of one gloo process group; rank 0's result.

    `train_fn` and `args` are pickled (cloudpickle) into every process: a module-level function of an
    importable module, and arguments small enough to ship (paths, settings; not datasets). On a cluster
    (`local_mode=False`) every process is a task, so the cluster needs `processes` free task slots at once.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    with session(spark, master, "sparrow-llm-train"):
        return TorchDistributor(num_processes=processes, local_mode=local_mode, use_gpu=False).run(train_fn, *args)


@contextmanager
def process_group(threads: int = 1) -> Iterator[tuple[int, int]]:
    """Joins the process group torchrun describes in the environment (gloo), yields (rank, world size) and
    leaves the group on the way out. `threads` torch threads per process: N processes share the cores."""
    torch.set_num_threads(threads)
    dist.init_process_group("gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


def sharded_loader(dataset: Dataset, global_batch: int, rank: int, world: int, seed: int,
                   shuffle: bool = True) -> DataLoader:
    """This rank's share of every global batch of `global_batch` rows (which `world` must divide): the
    sampler permutes with `seed` alike in every process and deals the rows out, so the union of the ranks'
    batches is the global batch one process would take. Call `loader.sampler.set_epoch(e)` each epoch."""
    if global_batch % world:
        raise ValueError(f"the global batch ({global_batch}) must divide among {world} processes")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=global_batch // world, sampler=sampler, drop_last=True)
