"""Tokenize and pack: the mix → flat, memory-mappable token shards (train / val / anneal) that training can
trust, because a contract table checked by the gate says every id, EOT, dtype, count and digest is right."""
from __future__ import annotations

import shutil

from components.tokenize import TokenizeParams as Params
from components.tokenize import check_contract, pack
from components.tokenize.contract import record_verdict
from components.tokenizer import tokenizer_digest

SECTION = "tokenize"
GATES = {"contract.parquet": "token_shards"}
__all__ = ["GATES", "Params", "SECTION", "run"]


def run(ctx, progress: bool = True) -> dict[str, float]:
    tokenizer, mix = ctx.inputs["tokenizer"], ctx.inputs["mix"]
    digest = tokenizer_digest(tokenizer)  # of the tokenizer folder itself, not what its manifest claims
    inputs = {"pretrain": sorted(mix.glob("pretrain-*.parquet")), "anneal": sorted(mix.glob("anneal-*.parquet"))}
    manifest = pack(ctx.params, tokenizer, digest, inputs, ctx.out_dir, progress=progress)
    contract = check_contract(ctx.out_dir, manifest["vocab_size"], digest, manifest["eot_id"])
    record_verdict(ctx.out_dir, contract)  # training's ranks trust this instead of reading every token again
    shutil.copy(ctx.out_dir / "manifest.json", ctx.report_dir / "manifest.json")
    return {"shards": len(manifest["shards"]), **{f"{split}_tokens": totals["tokens"]
                                                  for split, totals in manifest["splits"].items()}}
