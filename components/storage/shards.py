"""Writing a stream of rows as numbered Parquet shards of bounded size."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.storage.digest import file_md5


class ShardWriter:
    """Buffers at most `shard_rows` rows, then writes them as `<prefix>-00000.parquet`, `<prefix>-00001.parquet`,
    … (zstd). A `schema` keeps the column types the same in every shard, even where a column is all null.
    `shards` lists what was written (name, rows, bytes, md5), for the stage's manifest."""

    def __init__(self, out_dir: Path, prefix: str, shard_rows: int, schema: pa.Schema | None = None):
        self.out_dir, self.prefix, self.shard_rows, self.schema = Path(out_dir), prefix, shard_rows, schema
        self.rows: list[dict] = []
        self.shards: list[dict] = []
        self.total_rows = 0

    @property
    def names(self) -> list[str]:
        return [shard["name"] for shard in self.shards]

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.total_rows += 1
        if len(self.rows) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        path = self.out_dir / f"{self.prefix}-{len(self.shards):05d}.parquet"
        # without a schema, types are inferred through pandas: rows read back from Parquet carry NaN for
        # missing values, which pyarrow's from_pylist would refuse in a string column
        table = (pa.Table.from_pylist(self.rows, schema=self.schema) if self.schema
                 else pa.Table.from_pandas(pd.DataFrame(self.rows), preserve_index=False))
        pq.write_table(table, path, compression="zstd")
        self.shards.append({"name": path.name, "rows": len(self.rows), "bytes": path.stat().st_size,
                            "md5": file_md5(path)})
        self.rows = []
