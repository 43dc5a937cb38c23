"""The SFT data stage's steps, in order: read and normalise, deduplicate, decontaminate, tokenize, split, write.

Examples are held in memory between the steps (deduplication compares them all): a million conversations
take a few GB, which is the size instruction sets come in.

Every example read is either in the output or in `removed.jsonl` with its reason (duplicate_exact,
duplicate_near, contaminated, special_token_text, too_long); every bad record is in `bad_records.jsonl`
(on_bad_record: count) or stopped the stage.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from components.clean.dedup import DedupParams, exact_key, find_duplicates, signature
from components.sft_data.chat import encode, load_tokenizer, special_text
from components.sft_data.decontaminate import Decontaminator, load_decontaminator
from components.sft_data.examples import Example, Record
from components.sft_data.params import SYNTHETIC_SOURCE, SftDataParams
from components.sft_data.report import write_reports
from components.sft_data.selfinstruct import generate
from components.sft_data.sources import read_source
from components.storage import file_md5
from components.tokenize.pack import in_val
from components.tokenizer import tokenizer_digest
from components.tokenizer.train import IM_END

SPLITS = ("train", "val")
SYNTHETIC_FILE = "self_instruct.jsonl"  # in the report folder: the accepted tasks, read as one more source
REMOVAL_REASONS = ("duplicate_exact", "duplicate_near", "contaminated", "special_token_text", "too_long")
SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("split", pa.string()),
    ("messages", pa.string()),  # JSON: [{"role": ..., "content": ...}, ...]
    ("n_turns", pa.int32()),
    ("input_ids", pa.list_(pa.int32())),
    ("assistant_mask", pa.list_(pa.int8())),  # 1 where the token is trained
    ("n_tokens", pa.int32()), ("n_assistant_tokens", pa.int32()),
])


def build_sft_data(params: SftDataParams, tokenizer_path: Path | str, out_dir: Path, report_dir: Path,
                   progress: bool = True) -> dict:
    """Write examples-train.parquet, examples-val.parquet and manifest.json into `out_dir`, the reports into
    `report_dir`; return the manifest."""
    tokenizer = load_tokenizer(tokenizer_path)  # first: a wrong path fails before minutes of reading
    synthetic = generate(params.synthetic, Path(report_dir) / SYNTHETIC_FILE, Path(params.synthetic.cache_dir),
                         progress) if params.synthetic.enabled else None
    sources = [*params.sources, *([synthetic.source] if synthetic else [])]
    reads = [read_source(source, params.on_bad_record) for source in sources]
    bad_records = [bad for read in reads for bad in read.bad_records]
    removed: list[dict] = []
    examples = deduplicate([example for read in reads for example in read.examples], params.dedup, removed)
    decontaminator, eval_files = load_decontaminator(params.decontamination)
    examples, contaminated = decontaminate(examples, decontaminator, removed)
    rows = tokenize(examples, tokenizer, params, removed, progress)
    manifest = {
        "examples": per_split(rows, lambda row: 1),
        "tokens": per_split(rows, lambda row: row["n_tokens"]),
        "assistant_tokens": per_split(rows, lambda row: row["n_assistant_tokens"]),
        "files": write_splits(rows, Path(out_dir)),
        "tokenizer": str(tokenizer_path),
        "tokenizer_digest": tokenizer_digest(Path(tokenizer_path)),
        "vocab_size": len(tokenizer),
        "special_token_ids": special_token_ids(tokenizer),
        "max_seq_len": params.max_seq_len,
        "by_source": by_source(reads, removed, rows),
        "removed": dict(Counter(r["reason"] for r in removed)),
        "bad_records": dict(Counter(bad["reason"] for bad in bad_records)),
        "decontamination": {name: stats | {"files": eval_files[name], "dropped": contaminated[name]}
                            for name, stats in decontaminator.stats.items()},
        "sources": [{"name": s.name, "uri": s.uri, "format": s.format, "files": read.files}
                    for s, read in zip(params.sources, reads)],
    }
    if synthetic:  # its lineage is what it was made from, not the file it was written to
        manifest["sources"].append({"name": SYNTHETIC_SOURCE, "uri": synthetic.source.uri, "format": "alpaca",
                                    "files": synthetic.files(params.synthetic)})
        manifest["synthetic"] = synthetic.summary(params.synthetic)
    (Path(out_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    write_reports(Path(report_dir), manifest, rows, removed, bad_records)
    return manifest


def per_split(rows: list[dict], count) -> dict[str, int]:
    return {split: sum(count(row) for row in rows if row["split"] == split) for split in SPLITS}


def deduplicate(examples: list[Record], params: DedupParams, removed: list[dict]) -> list[Record]:
    """Exact and MinHash near duplicates (the clean stage's machinery) of all contents; the first is kept."""
    entries = ((i, exact_key(e.text), signature(e.text, params)) for i, e in enumerate(examples))
    duplicates = find_duplicates(entries, params)  # index → ("exact" | "near", kept index)
    for index, (kind, kept) in sorted(duplicates.items()):
        removed.append(removal(examples[index], f"duplicate_{kind}", f"of {examples[kept].id}"))
    return [example for i, example in enumerate(examples) if i not in duplicates]


def decontaminate(examples: list[Record], decontaminator: Decontaminator,
                  removed: list[dict]) -> tuple[list[Record], Counter]:
    """The examples that share no n-gram with an evaluation item, and how many each evaluation set took."""
    kept, per_set = [], Counter()
    for example in examples:
        hit = decontaminator.match(example.text)
        if hit is None:
            kept.append(example)
            continue
        per_set[hit.eval_set] += 1
        removed.append(removal(example, "contaminated", f"{hit.eval_set}: {hit.eval_item}: {hit.ngram!r}")
                       | hit._asdict())
    return kept, per_set


def tokenize(examples: list[Example], tokenizer, params: SftDataParams, removed: list[dict],
             progress: bool = True) -> list[dict]:
    """One output row per example that fits `max_seq_len`, with its split (a seeded hash of the id)."""
    specials, rows = special_text(tokenizer), []
    for example in tqdm(examples, desc="sft_data: tokenize", disable=not progress, file=sys.stderr):
        if any(specials.search(message["content"]) for message in example.messages):
            removed.append(removal(example, "special_token_text", "a turn writes a special token as text"))
            continue
        encoded = encode(tokenizer, example.messages)
        if len(encoded.input_ids) > params.max_seq_len:
            removed.append(removal(example, "too_long", f"{len(encoded.input_ids)} tokens > {params.max_seq_len}"))
            continue
        rows.append({
            "id": example.id, "source": example.source,
            "split": "val" if in_val(example.id, params.seed, params.val_fraction) else "train",
            "messages": json.dumps(example.messages, ensure_ascii=False), "n_turns": len(example.messages),
            "input_ids": encoded.input_ids, "assistant_mask": encoded.assistant_mask,
            "n_tokens": len(encoded.input_ids), "n_assistant_tokens": sum(encoded.assistant_mask)})
    return rows


def write_splits(rows: list[dict], out_dir: Path, prefix: str = "examples", schema: pa.Schema = SCHEMA) -> list[dict]:
    """<prefix>-<split>.parquet for each split that has rows (one file per split, so the gate's uniqueness
    across files is uniqueness across splits); their name, rows, bytes and md5."""
    files = []
    for split in SPLITS:
        chosen = [row for row in rows if row["split"] == split]
        if not chosen:
            continue
        path = out_dir / f"{prefix}-{split}.parquet"
        pq.write_table(pa.Table.from_pylist(chosen, schema=schema), path, compression="zstd")
        files.append({"name": path.name, "split": split, "rows": len(chosen), "bytes": path.stat().st_size,
                      "md5": file_md5(path)})
    return files


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """The ids training needs: the end of a conversation (eos), of a turn (im_end, the chat template's stop
    token, None if the tokenizer has none), and padding."""
    added = {token.content: token_id for token_id, token in tokenizer.added_tokens_decoder.items()}
    return {"eos": tokenizer.eos_token_id, "im_end": added.get(IM_END), "pad": tokenizer.pad_token_id}


def removal(example: Record, reason: str, detail: str) -> dict:
    return {"id": example.id, "source": example.source, "reason": reason, "detail": detail}


def by_source(reads, removed: list[dict], rows: list[dict]) -> dict[str, dict]:
    """Per source: read, bad records, each removal reason, and the examples in each split."""
    counts = {read.name: Counter(read=len(read.examples), bad_records=len(read.bad_records)) for read in reads}
    for entry in removed:
        counts[entry["source"]][entry["reason"]] += 1
    for row in rows:
        counts[row["source"]][row["split"]] += 1
    return {name: {key: count[key] for key in ("read", "bad_records", *REMOVAL_REASONS, *SPLITS)}
            for name, count in counts.items()}

