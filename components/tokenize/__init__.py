"""The tokenize stage's science: mix shards → flat token-id shards for training, plus their manifest.

Output, in `out_dir`, per split ("train" and "val" from the pretraining shards, "anneal" from the anneal ones):
  <split>-00000.bin      the token ids of documents one after another, each followed by the EOT id; dtype
                         uint16 when the vocabulary fits (≤ 65536 ids), else uint32; no header
  <split>-00000.idx.npy  int64 document start offsets, plus the end (documents + 1 entries)
  manifest.json          tokenizer digest, vocab size, dtype, EOT id, every shard (name, split, dtype, tokens,
                         documents, md5), and tokens/documents per split, per source and per domain
Validation documents are chosen by a seeded hash of the document id, so all copies (epochs) of a document
land on one side; anneal documents whose id is held out for validation are dropped from anneal as well.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from tokenizers import Tokenizer

from components.clean.executor import map_shards
from components.tokenize.contract import (ContractError, check_contract, open_shard, read_manifest,
                                          require_compatible, violations)
from components.tokenize.pack import (EOT, INPUT_KINDS, SPLITS, Job, Settings, merge_pieces, this_process,
                                      token_dtype, tokenize_shard)
from components.tokenize.params import TokenizeParams

__all__ = ["ContractError", "TokenizeParams", "check_contract", "open_shard", "pack", "read_manifest",
           "require_compatible", "violations"]


def pack(params: TokenizeParams, tokenizer_dir: Path, tokenizer_digest: str, inputs: dict[str, list[Path]],
         out_dir: Path, progress: bool = True) -> dict:
    """Tokenize `inputs` ({"pretrain": [...], "anneal": [...]}) into `out_dir`; write and return the manifest."""
    if set(inputs) - set(INPUT_KINDS):
        raise ValueError(f"unknown input kinds {sorted(set(inputs) - set(INPUT_KINDS))}; allowed: {INPUT_KINDS}")
    tokenizer_file = Path(tokenizer_dir) / "tokenizer.json"
    vocab_size, eot_id = _vocabulary(tokenizer_file)
    dtype = token_dtype(vocab_size)
    out_dir = Path(out_dir)
    if any(out_dir.glob("*.bin")) or (out_dir / "manifest.json").exists():  # stale shards would pass as ours
        raise FileExistsError(f"{out_dir} already holds token shards; pack into an empty folder")
    pieces_dir = out_dir / ".pieces"  # on the output's filesystem: Dask workers elsewhere must see it too
    pieces_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(str(tokenizer_file), eot_id, dtype.name, params.seed, params.val_fraction,
                        params.batch_docs, str(pieces_dir), this_process(), params.threads_per_worker,
                        params.executor.workers)
    paths = [(kind, str(path)) for kind in INPUT_KINDS for path in inputs.get(kind, [])]
    jobs = [Job(index, kind, path) for index, (kind, path) in enumerate(paths)]
    results = map_shards(tokenize_shard, jobs, (settings,), params.executor, "tokenize", progress)
    pieces = [piece for result in results for piece in result["pieces"]]
    shards = [shard for split in SPLITS for shard in merge_pieces(
        [p for p in pieces if p["split"] == split], out_dir, split, dtype, params.shard_tokens)]
    shutil.rmtree(pieces_dir)
    manifest = {"tokenizer_digest": tokenizer_digest, "vocab_size": vocab_size, "dtype": dtype.name,
                "eot_id": eot_id, "seed": params.seed, "val_fraction": params.val_fraction, "shards": shards,
                "splits": {split: _totals([p for p in pieces if p["split"] == split]) for split in SPLITS},
                "anneal_dropped_val_documents": sum(r["dropped_val_documents"] for r in results)}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _vocabulary(tokenizer_file: Path) -> tuple[int, int]:
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    eot_id = tokenizer.token_to_id(EOT)
    if eot_id is None:
        raise ValueError(f"{tokenizer_file} has no {EOT} token")
    return tokenizer.get_vocab_size(with_added_tokens=True), eot_id


def _totals(pieces: list[dict]) -> dict:
    by_source, by_domain = Counter(), Counter()
    for piece in pieces:
        by_source.update(piece["by_source"])
        by_domain.update(piece["by_domain"])
    return {"tokens": sum(p["tokens"] for p in pieces), "documents": sum(p["documents"] for p in pieces),
            "by_source": dict(sorted(by_source.items())), "by_domain": dict(sorted(by_domain.items()))}
