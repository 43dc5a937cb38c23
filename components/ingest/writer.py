"""The schema of the kept records' Parquet shards (records-00000.parquet, ...) and the manifest that lists them."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

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


def write_manifest(out_dir: Path, manifest: dict) -> None:
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
