"""What the preferences stage leaves for people and for lineage in reports/preferences/: the SFT data stage's
files (manifest.json, removed.jsonl, decontamination.jsonl, bad_records.jsonl; components/sft_data/report.py),
`judgements.jsonl` (every sample and judge answer of the simulation, verbatim) and `preferences_card.md`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from components.sft_data.report import (bad_records_section, decontamination_section, source_section, write_jsonl,
                                        write_reports)


def write_preference_reports(report_dir: Path, manifest: dict, rows: list[dict], removed: list[dict],
                             bad_records: list[dict], judgements: list[dict]) -> None:
    write_reports(report_dir, manifest, rows, removed, bad_records, card=data_card, card_name="preferences_card.md")
    if judgements:
        write_jsonl(report_dir / "judgements.jsonl", judgements)


def data_card(manifest: dict, rows: list[dict], contaminated: list[dict]) -> str:
    pairs = manifest["pairs"]
    prompts = {split: len({r["prompt_id"] for r in rows if r["split"] == split}) for split in ("train", "val")}
    lines = ["# Preference pairs", "",
             f"{pairs['train']:,} train pairs ({prompts['train']:,} prompts) and {pairs['val']:,} val pairs "
             f"({prompts['val']:,} prompts; no prompt in both), labelled by "
             f"{', '.join(f'{origin} ({n:,})' for origin, n in manifest['by_origin'].items()) or 'nobody'}; "
             f"tokenizer `{manifest['tokenizer_digest'][:12]}`, each side at most {manifest['max_seq_len']} tokens."]
    lines += source_section(manifest) + _length_section(rows)
    lines += decontamination_section(manifest, contaminated, "pairs")
    if "simulation" in manifest:
        lines += _simulation_section(manifest["simulation"])
    return "\n".join(lines + bad_records_section(manifest)) + "\n"


def _length_section(rows: list[dict]) -> list[str]:
    """Reply lengths (trained tokens) per source, and how often the chosen reply is the longer one: preference
    data that mostly prefers longer replies teaches a reward model, and then the policy, to ramble."""
    lines = ["", "## Reply lengths", "", "Tokens of the reply itself (the trained ones: reply, `<|im_end|>`, EOS).", "",
             "| source | pairs | chosen: median | rejected: median | chosen is longer | chosen is shorter |",
             "|---|---|---|---|---|---|"]
    for source in sorted({r["source"] for r in rows}):
        chosen = np.array([int(np.sum(r["chosen_mask"])) for r in rows if r["source"] == source])
        rejected = np.array([int(np.sum(r["rejected_mask"])) for r in rows if r["source"] == source])
        lines.append(f"| {source} | {len(chosen)} | {int(np.median(chosen))} | {int(np.median(rejected))} "
                     f"| {np.mean(chosen > rejected):.2f} | {np.mean(chosen < rejected):.2f} |")
    return lines


def _simulation_section(simulation: dict) -> list[str]:
    agreement = simulation["judge_agreement"]
    outcomes = ", ".join(f"{what} {n}" for what, n in sorted(simulation["outcomes"].items()))
    lines = ["", "## Simulated pairs", "",
             f"{simulation['prompts']} prompts, two sampled replies each, one picked by the judge: {outcomes} "
             "(every sample and verdict in judgements.jsonl)."]
    if agreement.get("agreement") is None:
        return lines + ["", f"Judge vs human labels: no verdict on {agreement['pairs']} human pairs."]
    return lines + ["", f"Judge vs human labels on {agreement['pairs']} human pairs: agreement "
                        f"{agreement['agreement']:.3f} (95% interval {agreement['agreement_low']:.3f}–"
                        f"{agreement['agreement_high']:.3f}) over the {agreement['judged']} it judged "
                        f"({agreement['unparsed']} answers named neither output); it picked the output shown first "
                        f"{agreement['first_position_share']:.2f} of the time (positions are randomised: 0.5 is "
                        "no position bias)."]
