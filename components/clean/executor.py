"""Fan a function out over shards: a local process pool by default, or a Dask cluster.

Data stages shard by input file; `map_shards` runs `fn(shard, *common)` for every shard and returns the
results in shard order. `kind: dask` with no address starts a LocalCluster on this machine (how the tests
run it); with `address: tcp://scheduler:8786` the same code runs on a cluster.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Literal, Sequence

from pydantic import Field
from tqdm import tqdm

from components.params import StrictModel


class ExecutorParams(StrictModel):
    kind: Literal["local", "dask"] = "local"
    workers: int = Field(2, gt=0, description="processes (local) or Dask workers (LocalCluster)")
    address: str | None = Field(None, description="a Dask scheduler, e.g. tcp://10.0.0.1:8786")


def map_shards(fn: Callable, shards: Sequence, common: tuple, params: ExecutorParams, desc: str,
               progress: bool = True) -> list[Any]:
    if params.kind == "dask":
        return _dask_map(fn, shards, common, params, desc, progress)
    if params.workers == 1 or len(shards) <= 1:  # no pool to start for one shard
        return [fn(shard, *common) for shard in tqdm(shards, desc=desc, disable=not progress)]
    with ProcessPoolExecutor(max_workers=min(params.workers, len(shards))) as pool:
        futures = {pool.submit(fn, shard, *common): i for i, shard in enumerate(shards)}
        return _gather(futures, as_completed(futures), len(shards), desc, progress)


def _dask_map(fn, shards, common, params, desc, progress) -> list:
    from dask.distributed import Client, LocalCluster, as_completed as dask_completed

    cluster = None if params.address else LocalCluster(
        n_workers=params.workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with Client(params.address or cluster) as client:
        futures = {client.submit(fn, shard, *common, pure=False): i for i, shard in enumerate(shards)}
        results = _gather(futures, dask_completed(futures), len(shards), desc, progress)
    if cluster:
        cluster.close()
    return results


def _gather(futures: dict, completed, total: int, desc: str, progress: bool) -> list:
    results: list = [None] * total
    for future in tqdm(completed, total=total, desc=desc, disable=not progress):
        results[futures[future]] = future.result()
    return results
