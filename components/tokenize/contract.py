"""The token shards' contract: what training may assume about a tokenize output, checked from the bytes.

`check_contract` reads every shard back (memory-mapped) and tabulates one row of facts per shard; a Great
Expectations suite checks those columns, and `violations` applies the same rules in plain Python:
  - the shard is not empty
  - every id < vocab size
  - one EOT per document (eot_count == documents) and the last token is the EOT
  - the offsets run from 0 to the token count and every document ends with the EOT
  - dtype is the smallest that holds the vocabulary (the one training reads with)
  - the manifest's token and document counts equal the contents
  - the tokenizer digest is the one training uses
  - the bytes are the ones the manifest's md5 names

That reads every byte twice and hashes it: the tokenize stage does it once and records the verdict with the
shards (`record_verdict`: contract.parquet, the table its gate checks, and contract.json, which binds it to the
manifest's md5). Training, on every rank of every start, then checks only what is cheap (`require_compatible`):
the manifest against the verdict, the vocabulary and tokenizer, and each shard's dtype and size on disk.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from components.storage import file_md5
from components.tokenize.pack import index_path, token_dtype

log = logging.getLogger(__name__)
VERDICT, TABLE = "contract.json", "contract.parquet"

COLUMNS = ["name", "split", "dtype", "expected_dtype", "tokens", "manifest_tokens", "documents",
           "manifest_documents", "eot_count", "ends_with_eot", "offsets_valid", "max_id", "vocab_size",
           "tokenizer_digest", "expected_digest", "empty", "md5_matches"]


def read_manifest(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / "manifest.json").read_text())


def open_shard(path: Path) -> tuple[np.memmap, np.ndarray]:
    """The shard's ids (memory-mapped) and its offsets: document i is `tokens[offsets[i]:offsets[i + 1]]`."""
    path = Path(path)
    return _tokens(path, _shard_dtype(read_manifest(path.parent), path.name)), np.load(index_path(path))


def check_contract(out_dir: Path, vocab_size: int, tokenizer_digest: str, eot_id: int) -> pd.DataFrame:
    """One row of facts per shard: those in the manifest, and any other `.bin` file in `out_dir`."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    listed = {shard["name"]: shard for shard in manifest["shards"]}
    unlisted = sorted(p.name for p in out_dir.glob("*.bin") if p.name not in listed)
    digests = {"tokenizer_digest": manifest.get("tokenizer_digest"), "expected_digest": tokenizer_digest}
    rows = [_facts(out_dir / name, listed.get(name), manifest, vocab_size, eot_id) | digests
            for name in [*listed, *unlisted]]
    # nullable integers: a shard missing from the manifest has no manifest counts, and the others stay ints
    return pd.DataFrame(rows, columns=COLUMNS).astype({"manifest_tokens": "Int64", "manifest_documents": "Int64"})


def _facts(path: Path, listed: dict | None, manifest: dict, vocab_size: int, eot_id: int) -> dict:
    dtype = _shard_dtype(manifest, path.name)
    tokens = _tokens(path, dtype) if path.exists() else np.zeros(0, dtype=dtype)
    offsets = np.load(index_path(path)) if index_path(path).exists() else np.zeros(0, dtype=np.int64)
    eots = tokens == eot_id
    return {"name": path.name, "split": path.name.rsplit("-", 1)[0], "dtype": dtype.name,
            "expected_dtype": token_dtype(vocab_size).name, "tokens": len(tokens),
            "manifest_tokens": listed["tokens"] if listed else None, "documents": max(len(offsets) - 1, 0),
            "manifest_documents": listed["documents"] if listed else None, "eot_count": int(eots.sum()),
            "ends_with_eot": bool(len(tokens) and tokens[-1] == eot_id),
            "offsets_valid": _offsets_valid(offsets, eots), "max_id": int(tokens.max()) if len(tokens) else -1,
            "vocab_size": vocab_size, "empty": len(tokens) == 0,
            # catches edits that keep counts, dtype and id range intact (a swapped token, a reordered document)
            "md5_matches": bool(listed) and path.exists() and file_md5(path) == listed.get("md5")}


def _offsets_valid(offsets: np.ndarray, eots: np.ndarray) -> bool:
    """Random access is only right if the offsets start at 0, end at the token count, never go backwards,
    and each document's last token is the EOT."""
    if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(eots) or (np.diff(offsets) <= 0).any():
        return False
    return bool(eots[offsets[1:] - 1].all())


def _shard_dtype(manifest: dict, name: str) -> np.dtype:
    """The dtype the shard was written with (the manifest's, per shard): a raw .bin file does not say."""
    shard = next((s for s in manifest["shards"] if s["name"] == name), {})
    return np.dtype(shard.get("dtype", manifest["dtype"]))


def _tokens(path: Path, dtype: np.dtype) -> np.ndarray:
    count = path.stat().st_size // dtype.itemsize
    if count == 0:  # an empty file cannot be memory-mapped
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


def violations(table: pd.DataFrame) -> list[str]:
    """The contract's rules over `check_contract`'s table: one message per broken rule and shard."""
    if table.empty:
        return ["no shards: expected at least one token shard, found none"]
    return [message for row in table.itertuples(index=False) for message in _row_violations(row)]


def _row_violations(row) -> list[str]:
    listed = not pd.isna(row.manifest_tokens)
    rules = [
        ("not empty", not row.empty, "at least one token", "0 tokens"),
        ("ids below vocab size", row.max_id < row.vocab_size, f"every id < {row.vocab_size}", f"id {row.max_id}"),
        ("one EOT per document", row.eot_count == row.documents, f"{row.documents} EOT ids (one per document)",
         f"{row.eot_count}"),
        ("ends with EOT", row.empty or row.ends_with_eot, "the last token to be the EOT id", "another id"),
        ("offsets", row.empty or row.offsets_valid, "offsets from 0 to the token count, each document ending "
         "in EOT", "offsets that do not"),
        ("dtype", row.dtype == row.expected_dtype, row.expected_dtype, row.dtype),
        ("listed in manifest", listed, "an entry in manifest.json", "none"),
        ("manifest tokens", not listed or row.tokens == row.manifest_tokens,
         f"{row.manifest_tokens} tokens (manifest)", f"{row.tokens} in the shard"),
        ("manifest documents", not listed or row.documents == row.manifest_documents,
         f"{row.manifest_documents} documents (manifest)", f"{row.documents} in the index"),
        ("tokenizer digest", row.tokenizer_digest == row.expected_digest, row.expected_digest, row.tokenizer_digest),
        ("md5", not listed or row.md5_matches, "the md5 in manifest.json", "other bytes"),
    ]
    return [f"{row.name}: rule '{rule}': expected {expected}, found {found}"
            for rule, holds, expected, found in rules if not holds]


class ContractError(ValueError):
    """Token shards that a model with this vocabulary and tokenizer must not train on."""


def record_verdict(out_dir: Path, table: pd.DataFrame) -> list[str]:
    """Write the full check's table (contract.parquet) and its verdict (contract.json: the rules broken, and the
    md5 of the manifest it was made against) beside the shards; returns the broken rules."""
    out_dir = Path(out_dir)
    table.to_parquet(out_dir / TABLE, index=False)
    broken = violations(table)
    verdict = {"manifest_md5": file_md5(out_dir / "manifest.json"), "violations": broken,
               "tokenizer_digest": table["expected_digest"].iloc[0] if len(table) else None,
               "vocab_size": int(table["vocab_size"].iloc[0]) if len(table) else None}
    (out_dir / VERDICT).write_text(json.dumps(verdict, indent=2) + "\n")
    return broken


def require_compatible(out_dir: Path, vocab_size: int, tokenizer_digest: str) -> dict:
    """What training calls before reading shards: returns the manifest, or refuses with every broken rule
    (another vocabulary size, another tokenizer, a missing EOT, ...) named with what was expected and found.

    With a verdict recorded for this very manifest (`record_verdict`), only the cheap facts are checked (the
    manifest's md5, vocabulary and tokenizer, each shard's dtype, size and index on disk: no token is read);
    without one, the full contract runs."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    verdict = _recorded_verdict(out_dir)
    if verdict is None:
        log.info("no recorded contract verdict for %s: checking every shard (reads all tokens)", out_dir)
        problems = violations(check_contract(out_dir, vocab_size, tokenizer_digest, manifest["eot_id"]))
    else:
        problems = [f"recorded verdict ({VERDICT}): {message}" for message in verdict["violations"]]
        problems += _cheap_violations(out_dir, manifest, vocab_size, tokenizer_digest)
    if manifest["vocab_size"] != vocab_size:
        problems.insert(0, f"manifest: the shards were made with a {manifest['vocab_size']}-token vocabulary, "
                           f"the model has {vocab_size}")
    if problems:
        raise ContractError(f"refusing the token shards in {out_dir}:\n  " + "\n  ".join(problems))
    return manifest


def _recorded_verdict(out_dir: Path) -> dict | None:
    """The verdict recorded for the manifest as it is now; None when there is none or the manifest changed
    since (then only the full check can vouch for the shards)."""
    path = out_dir / VERDICT
    if not path.exists():
        return None
    verdict = json.loads(path.read_text())
    if verdict.get("manifest_md5") != file_md5(out_dir / "manifest.json"):
        log.warning("%s was recorded for another manifest.json: checking every shard", path)
        return None
    return verdict


def _cheap_violations(out_dir: Path, manifest: dict, vocab_size: int, tokenizer_digest: str) -> list[str]:
    """The rules that need no token read: tokenizer digest, dtype, and every listed shard and index present
    with the size the manifest's counts give (a truncated copy, a shard from another run, a missing index)."""
    problems = []
    if manifest.get("tokenizer_digest") != tokenizer_digest:
        problems.append(f"manifest: rule 'tokenizer digest': expected {tokenizer_digest}, found "
                        f"{manifest.get('tokenizer_digest')}")
    expected_dtype = token_dtype(vocab_size)
    for shard in manifest["shards"]:
        name, dtype = shard["name"], _shard_dtype(manifest, shard["name"])
        path, index = out_dir / name, index_path(out_dir / name)
        if dtype != expected_dtype:
            problems.append(f"{name}: rule 'dtype': expected {expected_dtype.name}, found {dtype.name}")
        size = path.stat().st_size if path.exists() else None
        if size != shard["tokens"] * dtype.itemsize:
            problems.append(f"{name}: rule 'size': expected {shard['tokens'] * dtype.itemsize} bytes "
                            f"({shard['tokens']} tokens, manifest), found {'no file' if size is None else size}")
        # the index's length from its .npy header alone: documents + 1 offsets
        offsets = np.load(index, mmap_mode="r") if index.exists() else None
        if offsets is None or len(offsets) != shard["documents"] + 1:
            problems.append(f"{name}: rule 'index': expected {shard['documents'] + 1} offsets, found "
                            f"{'no index' if offsets is None else len(offsets)}")
    return problems
