"""Mixing: cleaned web documents + curated sources → the pretraining set at per-domain shares, and the
small high-quality anneal set for the end of training."""
from __future__ import annotations

import json

from components.mix import MixParams as Params
from components.mix import build_mix

SECTION = "mix"
GATES = {"pretrain-*.parquet": "mix_docs", "anneal-*.parquet": "mix_docs", "proportions.parquet": "mix_proportions"}
__all__ = ["GATES", "Params", "SECTION", "run"]


def run(ctx, progress: bool = True) -> dict[str, float]:
    shards = sorted(ctx.inputs["clean"].glob("docs-*.parquet")) + sorted(ctx.inputs["curate"].glob("docs-*.parquet"))
    report = build_mix(ctx.params, shards, ctx.out_dir)
    (ctx.out_dir / "manifest.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    (ctx.report_dir / "proportions.md").write_text(_table(report["proportions"]))
    shares = {f"share_{p['domain']}": p["realised"] for p in report["proportions"]}
    return {"pretrain_chars": report["pretrain_chars"], "anneal_documents": report["anneal_documents"], **shares}


def _table(rows: list[dict]) -> str:
    lines = ["| domain | requested | effective | realised | characters | documents |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['domain']} | {r['requested']:.3f} | {r['effective']:.3f} | {r['realised']:.3f} | "
              f"{r['chars']:,} | {r['documents']} |" for r in rows]
    return "\n".join(lines) + "\n"
