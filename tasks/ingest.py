"""Crawl ingest: WARC files from local, s3:// or https:// sources → Parquet shards of HTML responses."""
from __future__ import annotations

import shutil

from components.ingest import CrawlParams as Params
from components.ingest import ingest

SECTION = "crawl"
GATES = {"records-*.parquet": "crawl_records"}  # output files → the suite they must pass
__all__ = ["GATES", "Params", "SECTION", "run"]


def run(ctx, progress: bool = True) -> dict[str, float]:
    manifest = ingest(ctx.params, ctx.out_dir, progress=progress)
    shutil.copy(ctx.out_dir / "manifest.json", ctx.report_dir / "manifest.json")
    skipped = {f"skipped_{reason}": n for reason, n in sorted(manifest["skipped"].items())}
    return {"records": manifest["records"], "html_bytes": manifest["html_bytes"],
            "shards": len(manifest["shards"]), **skipped}
