"""Write kept records as zstd Parquet shards (records-00000.parquet, ...) and the manifest that lists them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# Explicit, so a shard whose column is all null still has the same types as the others.
SCHEMA = pa.schema([
    ("record_id", pa.string()),
    ("url", pa.string()),
    ("fetch_time", pa.timestamp("us", tz="UTC")),
    ("payload_digest", pa.string()),
    ("html", pa.large_string()),  # a shard of big pages can pass the 2 GiB limit of 32-bit string offsets
    ("charset", pa.string()),
    ("source", pa.string()),
    ("content_length", pa.int64()),
])
MANIFEST_NAME = "manifest.json"


class ShardWriter:
    """Buffers at most `shard_records` rows, then writes them out as the next shard."""

    def __init__(self, out_dir: Path, shard_records: int):
        self.out_dir = out_dir
        self.shard_records = shard_records
        self.rows: list[dict] = []
        self.shards: list[dict] = []
        self.records = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.records += 1
        if len(self.rows) >= self.shard_records:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        path = self.out_dir / f"records-{len(self.shards):05d}.parquet"
        pq.write_table(pa.Table.from_pylist(self.rows, schema=SCHEMA), path, compression="zstd")
        self.shards.append({"name": path.name, "records": len(self.rows), "bytes": path.stat().st_size,
                            "md5": file_md5(path)})
        self.rows = []


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(out_dir: Path, manifest: dict) -> None:
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
