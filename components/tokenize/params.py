"""Parameters of the tokenize stage (the `tokenize` section of params.yaml)."""
from __future__ import annotations

from pydantic import Field

from components.clean.executor import ExecutorParams
from components.params import StrictModel


class TokenizeParams(StrictModel):
    val_fraction: float = Field(0.02, ge=0, lt=1, description="share of documents (by a seeded hash of the id) "
                                "held out for validation; every copy of a document lands on the same side")
    seed: int = 1
    shard_tokens: int = Field(50_000_000, gt=0, description="most tokens per output shard, cut at document "
                              "boundaries (a single longer document gets a shard of its own)")
    batch_docs: int = Field(256, gt=0, description="documents per Parquet record batch and encode_batch call")
    executor: ExecutorParams = Field(ExecutorParams(workers=1), description="one task per input shard (one "
                                     "worker: this process, the tokenizer's thread pool on every core; the "
                                     "fastest setting measured, see benchmarks/RESULTS.md)")
    threads_per_worker: int | None = Field(None, gt=0, description="the tokenizer's threads in each worker process; "
                                           "null: the cores divided among the workers, so that workers x threads "
                                           "fill the cores without oversubscribing them")
