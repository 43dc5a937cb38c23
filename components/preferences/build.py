"""The preferences stage's steps, in order: read (and simulate), deduplicate, decontaminate, tokenize, split, write.

The steps after reading are the SFT data stage's (components/sft_data/build.py) on pairs: the same duplicate
detection, the same evaluation sets and n-gram decontamination, the same chat template, drop reasons and reports.
What differs: a pair is two conversations that share the prompt, each trained only on its last reply; and the
split hashes the prompt, so that no prompt is in both train and val (OpenAssistant gives several pairs per prompt).

Every pair read is in the output or in `removed.jsonl` with its reason; every bad record is in
`bad_records.jsonl` (on_bad_record: count) or stopped the stage.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from components.preferences.pairs import Pair
from components.preferences.params import PreferencesParams
from components.preferences.report import write_preference_reports
from components.preferences.requests import CachedChat
from components.preferences.simulate import simulate
from components.preferences.sources import read_preferences
from components.sft_data.build import (by_source, decontaminate, deduplicate, per_split, removal, special_token_ids,
                                       write_splits)
from components.sft_data.chat import encode, load_tokenizer, special_text
from components.sft_data.decontaminate import load_decontaminator
from components.tokenize.pack import in_val
from components.tokenizer import tokenizer_digest

SIDES = ("chosen", "rejected")
SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("origin", pa.string()), ("split", pa.string()),
    ("prompt", pa.string()),  # JSON: [{"role": ..., "content": ...}, ...], ending with the user
    ("prompt_id", pa.string()),  # the prompt's digest: a prompt is on one side of the split
    ("chosen", pa.string()), ("rejected", pa.string()),
    # each side: the templated prompt + reply + EOS, and 1 on the reply, its <|im_end|> and the EOS
    ("chosen_ids", pa.list_(pa.int32())), ("chosen_mask", pa.list_(pa.int8())),
    ("rejected_ids", pa.list_(pa.int32())), ("rejected_mask", pa.list_(pa.int8())),
    ("chosen_tokens", pa.int32()), ("rejected_tokens", pa.int32()),  # len(*_ids)
])


def build_preferences(params: PreferencesParams, tokenizer_path: Path | str, out_dir: Path, report_dir: Path,
                      chat: CachedChat | None = None, progress: bool = True) -> dict:
    """Write pairs-train.parquet, pairs-val.parquet and manifest.json into `out_dir`, the reports into
    `report_dir`; return the manifest. `chat` asks the policy and the judge when the simulation is enabled."""
    tokenizer = load_tokenizer(tokenizer_path)  # first: a wrong path fails before minutes of reading
    reads = [read_preferences(source, params.on_bad_record) for source in params.sources]
    simulation = None
    if params.simulation.enabled:
        human = [pair for read in reads for pair in read.examples if pair.origin == "human"]
        simulation = simulate(params.simulation, human, chat, params.on_bad_record, progress)
        reads.append(simulation.read)
    bad_records = [bad for read in reads for bad in read.bad_records]
    removed: list[dict] = []
    pairs = deduplicate([pair for read in reads for pair in read.examples], params.dedup, removed)
    decontaminator, eval_files = load_decontaminator(params.decontamination)
    pairs, contaminated = decontaminate(pairs, decontaminator, removed)
    rows = tokenize(pairs, tokenizer, params, removed, progress)
    manifest = {
        "pairs": per_split(rows, lambda row: 1),
        "tokens": per_split(rows, lambda row: row["chosen_tokens"] + row["rejected_tokens"]),
        "files": write_splits(rows, Path(out_dir), prefix="pairs", schema=SCHEMA),
        "tokenizer": str(tokenizer_path),
        "tokenizer_digest": tokenizer_digest(Path(tokenizer_path)),
        "vocab_size": len(tokenizer),
        "special_token_ids": special_token_ids(tokenizer),
        "max_seq_len": params.max_seq_len,
        "by_source": by_source(reads, removed, rows),
        "by_origin": dict(Counter(row["origin"] for row in rows)),
        "removed": dict(Counter(r["reason"] for r in removed)),
        "bad_records": dict(Counter(bad["reason"] for bad in bad_records)),
        "decontamination": {name: stats | {"files": eval_files[name], "dropped": contaminated[name]}
                            for name, stats in decontaminator.stats.items()},
        "sources": [{"name": s.name, "uri": s.uri, "format": s.format, "origin": s.origin, "files": read.files}
                    for s, read in zip(params.sources, reads)],
    }
    if simulation:
        manifest["sources"].append(_simulated_source(params, simulation))
        manifest["simulation"] = _simulation_summary(params, simulation)
    (Path(out_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    write_preference_reports(Path(report_dir), manifest, rows, removed, bad_records,
                             simulation.judgements if simulation else [])
    return manifest


def tokenize(pairs: list[Pair], tokenizer, params: PreferencesParams, removed: list[dict],
             progress: bool = True) -> list[dict]:
    """One output row per pair whose two sides both fit `max_seq_len`, with its split (a seeded hash of the
    prompt)."""
    specials, rows = special_text(tokenizer), []
    for pair in tqdm(pairs, desc="preferences: tokenize", disable=not progress, file=sys.stderr):
        if specials.search(pair.text):
            removed.append(removal(pair, "special_token_text", "a turn writes a special token as text"))
            continue
        sides = {side: encode(tokenizer, pair.conversation(getattr(pair, side)), last_reply_only=True)
                 for side in SIDES}
        lengths = {side: len(encoded.input_ids) for side, encoded in sides.items()}
        if max(lengths.values()) > params.max_seq_len:
            removed.append(removal(pair, "too_long", f"{lengths['chosen']} (chosen) and {lengths['rejected']} "
                                                     f"(rejected) tokens; at most {params.max_seq_len}"))
            continue
        rows.append({
            "id": pair.id, "source": pair.source, "origin": pair.origin,
            "split": "val" if in_val(pair.prompt_id, params.seed, params.val_fraction) else "train",
            "prompt": json.dumps(pair.prompt, ensure_ascii=False), "prompt_id": pair.prompt_id,
            "chosen": pair.chosen, "rejected": pair.rejected,
            **{f"{side}_ids": encoded.input_ids for side, encoded in sides.items()},
            **{f"{side}_mask": encoded.assistant_mask for side, encoded in sides.items()},
            **{f"{side}_tokens": length for side, length in lengths.items()}})
    return rows


def _simulated_source(params: PreferencesParams, simulation) -> dict:
    """Lineage: the prompts' files, and the two models that made and labelled the replies."""
    sim = params.simulation
    return {"name": sim.name, "uri": sim.prompts.uri, "format": sim.prompts.format, "origin": "simulated",
            "files": simulation.read.files,
            **{role: {"base_url": endpoint.base_url, "model": endpoint.model} for role, endpoint
               in (("policy", sim.policy), ("judge", sim.judge))}}


def _simulation_summary(params: PreferencesParams, simulation) -> dict:
    return {"prompts": sum(simulation.outcomes.values()), "outcomes": dict(simulation.outcomes),
            "judge_agreement": simulation.agreement, "seed": params.simulation.seed}
