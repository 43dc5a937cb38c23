"""Tokenizer training: a byte-level BPE tokenizer learned from a deterministic sample of the mix, with its
chat template, a report on held-out text per source and domain, and a round-trip check of the mix's
documents (and of adversarial strings) that the gate requires to be exact."""
from __future__ import annotations

import json

from components.tokenizer import TokenizerParams as Params
from components.tokenizer import heldout_texts, load, report, train_tokenizer
from components.tokenizer.roundtrip import ADVERSARIAL, mix_texts, roundtrip_table

SECTION = "tokenizer"
GATES = {"roundtrip.parquet": "tokenizer_roundtrip"}
__all__ = ["GATES", "Params", "SECTION", "run"]


def run(ctx, progress: bool = True) -> dict[str, float]:
    mix = ctx.inputs["mix"]
    shards = sorted(mix.glob("pretrain-*.parquet")) + sorted(mix.glob("anneal-*.parquet"))
    manifest = train_tokenizer(ctx.params, shards, ctx.out_dir)
    by_source = heldout_texts(ctx.params, shards, by="source")
    by_domain = heldout_texts(ctx.params, shards, by="domain")
    data = report(ctx.out_dir, {"source": by_source, "domain": by_domain})
    (ctx.report_dir / "report.md").write_text(data.pop("markdown"))
    (ctx.report_dir / "report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False))
    texts = dict(mix_texts(shards, ctx.params.roundtrip_docs))  # every document, held out or not
    texts |= {f"adversarial/{i}": t for i, t in enumerate(ADVERSARIAL)}
    roundtrip_table(load(ctx.out_dir), texts).to_parquet(ctx.out_dir / "roundtrip.parquet", index=False)
    return {"vocab_size": manifest["vocab_size"], "train_chars": manifest["train_chars"],
            "heldout_bytes_per_token": data["all"]["bytes_per_token"],
            "vocab_coverage": data["vocab_coverage"]}
