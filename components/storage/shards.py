"""Writing a stream of rows as numbered Parquet shards of bounded size."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


class ShardWriter:
    """Buffers rows and writes `<prefix>-00000.parquet`, `<prefix>-00001.parquet`, … of `shard_rows` rows."""

    def __init__(self, out_dir: Path, prefix: str, shard_rows: int):
        self.out_dir, self.prefix, self.shard_rows = Path(out_dir), prefix, shard_rows
        self.rows: list[dict] = []
        self.names: list[str] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            name = f"{self.prefix}-{len(self.names):05d}.parquet"
            pd.DataFrame(self.rows).to_parquet(self.out_dir / name, compression="zstd", index=False)
            self.names.append(name)
            self.rows = []
