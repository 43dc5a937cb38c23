"""Curated sources: high-quality text (encyclopedia, books, speeches, edited web text) → document shards.

They are the quality classifier's positives and part of the pretraining mix."""
from __future__ import annotations

from collections import Counter

from components.clean.domain import DomainClassifier
from components.clean.store import doc_row
from components.curated import CuratedParams as Params
from components.curated import read_curated
from components.storage import ShardWriter

SECTION = "curated"
GATES = {"docs-*.parquet": "curated_docs"}
SHARD_DOCS = 10_000
__all__ = ["GATES", "Params", "SECTION", "run"]


def run(ctx, progress: bool = True) -> dict[str, float]:
    classify = DomainClassifier()  # for mixed sources declared without a domain
    writer = ShardWriter(ctx.out_dir, "docs", SHARD_DOCS)
    docs, chars = Counter(), Counter()
    for doc in read_curated(ctx.params):
        if doc.meta.get("domain") is None:
            classify(doc)
        writer.add(doc_row(doc))
        docs[doc.source] += 1
        chars[doc.source] += len(doc.text)
    writer.flush()
    return {"documents": sum(docs.values()), "chars": sum(chars.values()),
            **{f"documents_{s}": n for s, n in sorted(docs.items())}}
