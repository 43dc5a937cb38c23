"""The mix stage's science: cleaned web documents + curated sources → pretraining and anneal sets."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from components.mix.mix import AnnealParams, MixParams, anneal_ids, plan
from components.storage import ShardWriter

COLUMNS = ["id", "text", "source", "domain", "quality", "url"]
__all__ = ["AnnealParams", "MixParams", "build_mix"]


def build_mix(params: MixParams, shards: list[Path], out_dir: Path) -> dict:
    """Write pretrain-*.parquet, anneal-*.parquet and proportions.parquet; return the report."""
    meta = pd.concat([_metadata(s) for s in shards], ignore_index=True)
    copies, proportions = plan(meta, params)
    anneal = set(anneal_ids(meta, int(proportions["chars"].sum()), params))
    pretrain = ShardWriter(out_dir, "pretrain", params.shard_docs)
    annealing = ShardWriter(out_dir, "anneal", params.shard_docs)
    for shard in shards:
        for row in _documents(shard):
            for epoch in range(int(copies.get(row["id"], 0))):
                pretrain.add(row | {"epoch": epoch})
            if row["id"] in anneal:
                annealing.add(row | {"epoch": 0})
    pretrain.flush()
    annealing.flush()
    proportions.to_parquet(out_dir / "proportions.parquet", index=False)
    return {"pretrain_shards": pretrain.names, "anneal_shards": annealing.names,
            "pretrain_chars": int(proportions["chars"].sum()), "anneal_documents": len(anneal),
            "proportions": proportions.to_dict("records")}


def _metadata(shard: Path) -> pd.DataFrame:
    frame = _read(shard)
    return frame.assign(chars=frame["text"].str.len()).drop(columns=["text", "url"])


def _documents(shard: Path):
    yield from _read(shard).to_dict("records")


def _read(shard: Path) -> pd.DataFrame:
    """Web and curated shards share these columns; curated documents have no quality score or URL."""
    frame = pd.read_parquet(shard)
    for column in ("quality", "url"):
        if column not in frame:
            frame[column] = None
    return frame[COLUMNS]
