"""What the SFT data stage leaves for people and for lineage in reports/sft_data/.

- manifest.json: the output's manifest; its `sources[].files[].url` are the raw files lineage walks back to;
- removed.jsonl: every example read but not kept, with its reason and a detail;
- decontamination.jsonl: the contaminated ones, with the evaluation set, item and shared n-gram;
- bad_records.jsonl: the records counted as bad (on_bad_record: count), with file, line and reason;
- self_instruct.jsonl: the tasks the teacher wrote that passed the filters (synthetic data, when enabled);
- sft_data_card.md: counts per source and reason, decontamination per evaluation set, the teacher's requests,
  tokens, cost and drops per filter, token lengths.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REPORT_SAMPLES = 5  # contaminated examples quoted in the data card


def write_reports(report_dir: Path, manifest: dict, rows: list[dict], removed: list[dict],
                  bad_records: list[dict], card=None, card_name: str = "sft_data_card.md") -> None:
    """The manifest, the jsonl files and the data card `card(manifest, rows, contaminated)` (default: SFT's)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    contaminated = [entry for entry in removed if entry["reason"] == "contaminated"]
    for name, entries in (("removed", removed), ("decontamination", contaminated), ("bad_records", bad_records)):
        write_jsonl(report_dir / f"{name}.jsonl", entries)
    (report_dir / card_name).write_text((card or data_card)(manifest, rows, contaminated))


def data_card(manifest: dict, rows: list[dict], contaminated: list[dict]) -> str:
    lines = ["# SFT data", "",
             f"{manifest['examples']['train']:,} train and {manifest['examples']['val']:,} val conversations, "
             f"{manifest['tokens']['train']:,} train tokens ({manifest['assistant_tokens']['train']:,} trained), "
             f"tokenizer `{manifest['tokenizer_digest'][:12]}`, at most {manifest['max_seq_len']} tokens each."]
    lines += source_section(manifest) + synthetic_section(manifest)
    lines += decontamination_section(manifest, contaminated, "examples")
    lines += ["", "## Tokens per conversation", "", "| split | min | median | p95 | max | trained share |",
              "|---|---|---|---|---|---|"]
    for split in ("train", "val"):
        tokens = np.array([r["n_tokens"] for r in rows if r["split"] == split])
        if len(tokens):
            trained = sum(r["n_assistant_tokens"] for r in rows if r["split"] == split) / tokens.sum()
            lines.append(f"| {split} | {tokens.min()} | {int(np.median(tokens))} | {int(np.percentile(tokens, 95))} "
                         f"| {tokens.max()} | {trained:.2f} |")
    return "\n".join(lines + bad_records_section(manifest)) + "\n"


def source_section(manifest: dict) -> list[str]:
    """The counts per source (`manifest["by_source"]`) as a table."""
    by_source = manifest["by_source"]
    columns = list(next(iter(by_source.values())))
    lines = ["", "## Per source", "", f"| source | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    return lines + [f"| {name} | {' | '.join(str(counts[c]) for c in columns)} |" for name, counts in by_source.items()]


def synthetic_section(manifest: dict) -> list[str]:
    """The teacher, what it was asked and paid, and what Alpaca's filters kept of its tasks."""
    synthetic = manifest.get("synthetic")
    if not synthetic:
        return []
    requests, tokens, paid, tasks = (synthetic[key] for key in ("requests", "tokens", "tokens_paid", "tasks"))
    cost = "no prices given" if synthetic["cost_usd"] is None else (
        f"${synthetic['cost_usd']:,.4f} (this run ${synthetic['cost_usd_paid']:,.4f})")
    lines = ["", "## Synthetic data (self-instruct)", "",
             f"Teacher `{synthetic['teacher']['model']}` at {synthetic['teacher']['base_url']}: "
             f"{requests['made'] + requests['cached']} requests ({requests['made']} made, {requests['cached']} from "
             f"the cache), {tokens['prompt']:,} prompt + {tokens['completion']:,} completion tokens (this run "
             f"{paid['prompt']:,} + {paid['completion']:,}), cost {cost}.",
             f"{tasks['accepted']} of {tasks['candidates']} candidate tasks accepted ({tasks['wanted']} wanted).", "",
             "| dropped by | tasks |", "|---|---|"]
    return lines + [f"| {reason} | {n} |" for reason, n in synthetic["dropped"].items()]


def decontamination_section(manifest: dict, contaminated: list[dict], items: str) -> list[str]:
    """Per evaluation set: its n, its items and how many `items` (examples, pairs) it took; the first few hits."""
    lines = ["", "## Decontamination", "",
             "Word n-grams shared with an evaluation item (components/sft_data/decontaminate.py).", "",
             f"| eval set | items | n | items too short to match | {items} dropped |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {s['items']} | {s['n']} | {s['unmatched_short_items']} | {s['dropped']} |"
              for name, s in manifest["decontamination"].items()]
    if contaminated:
        lines += ["", f"First {min(len(contaminated), REPORT_SAMPLES)} of {len(contaminated)} (all in "
                      f"decontamination.jsonl):", ""]
        lines += [f"- `{c['id']}`: {c['eval_set']}, {c['eval_item']}: \"{c['ngram']}\""
                  for c in contaminated[:REPORT_SAMPLES]]
    return lines


def bad_records_section(manifest: dict) -> list[str]:
    if not manifest["bad_records"]:
        return []
    return ["", "## Bad records (counted, not kept)", "",
            *(f"- {reason}: {n}" for reason, n in sorted(manifest["bad_records"].items()))]


def write_jsonl(path: Path, entries: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for entry in entries:
            file.write(json.dumps(entry, ensure_ascii=False) + "\n")
