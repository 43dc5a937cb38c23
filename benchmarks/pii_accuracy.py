"""Span-level precision and recall of components.clean.pii.find_pii on labelled public data.

    .venv/bin/python benchmarks/pii_accuracy.py [--errors]

Data (under $LLM_LIFECYCLE_DATA_DIR, default ../shared/data, folder pii/):
- presidio-synth-part.json: presidio-research synthetic sentences, each {"full_text", "spans": [{"entity_type",
  "start_position", "end_position"}]}; EMAIL_ADDRESS, PHONE_NUMBER and IP_ADDRESS are scored, and the other
  types (credit cards, SSNs, dates, IBANs, ZIP codes, ...) are the hard negatives a prediction may hit.
- dolma-email-spans/: dolma's PII test documents (documents-000.json.gz) and their labels
  (attributes-pii-000.json.gz: "pii": {"email": [[start, end, score], ...]}). Only spans with score >= 0.5 are
  gold: the one below (0.1) is a Twitter handle, and the expected output marks only the 0.8 spans as e-mails.
  Phones and IPs are not labelled there, so only e-mail is scored.

Matching: a predicted span is correct if it overlaps a gold span of the same type; a gold span is found if a
predicted span of its type overlaps it. Precision = correct / predicted, recall = found / gold, over all texts.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from components.clean.pii import KINDS, find_pii

DATA = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
PII = DATA / "pii"
PRESIDIO_TYPES = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "IP_ADDRESS": "ip"}
DOLMA_MIN_SCORE = 0.5


@dataclass
class Example:
    text: str
    gold: list[tuple[str, int, int]]  # (type, start, end); type is one of KINDS or a presidio entity type


@dataclass
class Score:
    gold: int = 0
    found: int = 0
    predicted: int = 0
    correct: int = 0
    false_positive_on: Counter = field(default_factory=Counter)  # the gold type a wrong prediction overlaps
    errors: list[str] = field(default_factory=list)


def presidio_examples() -> list[Example]:
    rows = json.loads((PII / "presidio-synth-part.json").read_text())
    return [Example(row["full_text"], [(PRESIDIO_TYPES.get(s["entity_type"], s["entity_type"]),
                                        s["start_position"], s["end_position"]) for s in row["spans"]])
            for row in rows]


def dolma_examples() -> list[Example]:
    folder = PII / "dolma-email-spans"
    labels = {row["id"]: row["attributes"] for row in read_jsonl(folder / "attributes-pii-000.json.gz")}
    examples = []
    for doc in read_jsonl(folder / "documents-000.json.gz"):
        spans = labels[doc["id"]].get("pii", {}).get("email", [])
        examples.append(Example(doc["text"], [("email", s, e) for s, e, score in spans if score >= DOLMA_MIN_SCORE]))
    return examples


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def overlaps(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def score(examples: list[Example], kinds: tuple[str, ...]) -> dict[str, Score]:
    scores = {kind: Score() for kind in kinds}
    for example in examples:
        predicted = [p for p in find_pii(example.text) if p[0] in kinds]
        for kind in kinds:
            add_example(scores[kind], kind, example, predicted)
    return scores


def add_example(s: Score, kind: str, example: Example, predicted: list[tuple[str, int, int]]) -> None:
    gold = [g for g in example.gold if g[0] == kind]
    mine = [p for p in predicted if p[0] == kind]
    s.gold += len(gold)
    s.predicted += len(mine)
    for g in gold:
        hit = any(overlaps(g, p) for p in mine)
        s.found += hit
        if not hit:
            s.errors.append(f"missed {kind}: {example.text[g[1]:g[2]]!r} in {context(example.text, g)!r}")
    for p in mine:
        if any(overlaps(p, g) for g in gold):
            s.correct += 1
            continue
        other = [g[0] for g in example.gold if overlaps(p, g)]
        s.false_positive_on[other[0] if other else "unlabelled"] += 1
        s.errors.append(f"wrong {kind}: {example.text[p[1]:p[2]]!r} in {context(example.text, p)!r}")


def context(text: str, span: tuple[str, int, int], width: int = 40) -> str:
    return text[max(0, span[1] - width):span[2] + width]


def ratio(part: int, whole: int) -> str:
    return f"{part / whole:.3f}" if whole else "n/a"


def table(results: dict[str, dict[str, Score]]) -> str:
    lines = ["| data | type | gold | found | predicted | correct | precision | recall | wrong predictions hit |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for data, scores in results.items():
        for kind, s in scores.items():
            wrong = ", ".join(f"{k} {n}" for k, n in s.false_positive_on.most_common()) or "-"
            lines.append(f"| {data} | {kind} | {s.gold} | {s.found} | {s.predicted} | {s.correct} | "
                         f"{ratio(s.correct, s.predicted)} | {ratio(s.found, s.gold)} | {wrong} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", action="store_true", help="also list every miss and wrong prediction")
    args = parser.parse_args()
    presidio, dolma = presidio_examples(), dolma_examples()
    results = {f"presidio ({len(presidio)} sentences)": score(presidio, KINDS),
               f"dolma ({len(dolma)} documents)": score(dolma, ("email",))}
    print(table(results))
    if args.errors:
        for scores in results.values():
            for s in scores.values():
                print("\n".join(s.errors))


if __name__ == "__main__":
    main()
