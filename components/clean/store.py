"""Documents to and from Parquet: one row per document, its meta as columns (nested dicts flattened)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from components.clean.doc import Doc

CORE = ("id", "text", "source", "url")


def write_docs(docs: list[Doc], path: Path) -> None:
    """One Parquet file; nothing when there are no documents (readers skip missing shards)."""
    if not docs:
        return
    _write(pd.DataFrame([doc_row(d) for d in docs]), path)


def doc_row(doc: Doc) -> dict:
    return {"id": doc.id, "text": doc.text, "source": doc.source, "url": doc.url, **_flat(doc.meta)}


def write_removed(rows: list[dict], path: Path) -> None:
    if rows:
        _write(pd.DataFrame(rows), path)


def read_docs(paths: Iterable[str | Path], columns: list[str] | None = None) -> Iterator[Doc]:
    for path in paths:
        if not Path(path).exists():
            continue
        table = pd.read_parquet(path, columns=columns)
        meta_columns = [c for c in table.columns if c not in CORE]
        for row in table.to_dict("records"):
            yield Doc(id=row["id"], text=row.get("text", ""), source=row.get("source", ""), url=row.get("url"),
                      meta={c: row[c] for c in meta_columns})


def _flat(meta: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in meta.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}_"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, compression="zstd", index=False)
