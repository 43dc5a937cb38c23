"""Cleaning: crawl records → extracted, filtered, PII-scrubbed, deduplicated, quality-scored documents."""
from __future__ import annotations

import json

import pandas as pd

from components.clean.params import CleanParams as Params

SECTION = "clean"
GATES = {"docs-*.parquet": "clean_docs"}
__all__ = ["GATES", "Params", "SECTION", "run"]


def run(ctx, progress: bool = True) -> dict[str, float]:
    from components.clean.datacard import write_datacard  # matplotlib
    from components.clean.pipeline import clean

    summary = clean(ctx.params, ctx.inputs["ingest"], ctx.inputs["curate"], ctx.out_dir, progress=progress)
    (ctx.out_dir / "manifest.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    (ctx.report_dir / "clean_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    write_datacard(summary, _card_columns(ctx.out_dir), ctx.report_dir)
    removed = {f"removed_{step}": s["docs_in"] - s["docs_out"] for step, s in summary["steps"].items()}
    return {"documents": summary["documents"], "quality_holdout_accuracy": summary["quality_model"]["holdout_accuracy"],
            "quality_cutoff": summary["quality_cutoff"], **removed}


def _card_columns(out_dir) -> pd.DataFrame:
    """Per kept document, what the data card plots (lengths instead of texts, one shard at a time)."""
    frames = []
    for shard in sorted(out_dir.glob("docs-*.parquet")):
        frame = pd.read_parquet(shard, columns=["text", "quality", "language", "domain"])
        frames.append(frame.assign(chars=frame["text"].str.len()).drop(columns="text"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["chars", "quality", "language", "domain"])
