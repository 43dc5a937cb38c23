"""Accuracy and speed of the cleaning classifiers on the shared public data; prints markdown tables.

    .venv/bin/python -m benchmarks.classifier_accuracy

Quality: trained on WikiText articles + Gutenberg chunks (curated) against the 300 C4 documents (web), with
the default QualityParams; reported on its stratified holdout, and on two sources it never saw (real
Wikipedia against dolma's CCNet web documents). Domain: the rules against components/clean/domain_sample.jsonl.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from itertools import cycle, islice
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from components.clean.domain import DOMAINS, classify
from components.clean.quality import QualityParams, train
from components.curated import CuratedSource, read_source

REPO = Path(__file__).resolve().parents[1]
CURATED = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR", REPO.parent / "shared" / "data")).resolve() / "curated"
SAMPLE = REPO / "components" / "clean" / "domain_sample.jsonl"
SPEED_DOCS = 3000


def texts(path: str, format: str, **options) -> list[str]:
    source = CuratedSource(name="b", uri=str(CURATED / path), format=format, domain=None, **options)
    return [doc.text for doc in read_source(source)]


def quality_rows() -> list[tuple[str, str]]:
    positives = texts("wikitext-2/valid.txt", "wikitext") + texts("gutenberg/pg*.txt", "gutenberg", split_chars=5000)
    web = texts("llamafactory-demo/c4_demo.jsonl", "jsonl")
    started = time.perf_counter()
    model, report = train(positives, web, QualityParams())
    train_s = time.perf_counter() - started
    wikipedia = model.score(texts("llamafactory-demo/wiki_demo.txt", "lines"))
    dolma = model.score(texts("web-docs/dolma-tests/*.jsonl.gz", "jsonl"))
    transfer_auc = roc_auc_score([1] * len(wikipedia) + [0] * len(dolma), np.concatenate([wikipedia, dolma]))
    batch = list(islice(cycle(web + positives), SPEED_DOCS))  # real documents, cut to max_chars by score()
    started = time.perf_counter()
    model.score(batch)
    docs_per_s = SPEED_DOCS / (time.perf_counter() - started)
    return [
        ("training documents (curated / web)", f"{report['n_pos']} / {report['n_neg']}"),
        ("holdout documents", str(report["n_holdout"])),
        ("holdout accuracy", f"{report['holdout_accuracy']:.3f}"),
        ("holdout AUC", f"{report['holdout_auc']:.4f}"),
        ("unseen sources AUC (30 Wikipedia vs 20 dolma web)", f"{transfer_auc:.3f}"),
        ("mean score: Wikipedia / dolma web", f"{wikipedia.mean():.2f} / {dolma.mean():.2f}"),
        ("training time (s, 1 core)", f"{train_s:.1f}"),
        (f"score() throughput (docs/s, 1 core, {SPEED_DOCS} docs, ≤5000 chars each)", f"{docs_per_s:,.0f}"),
    ]


def domain_rows() -> tuple[list[tuple], float]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    confusion = Counter((row["domain"], classify(row["url"], row["text"])[0]) for row in rows)
    table = []
    for domain in DOMAINS:
        total = sum(count for (gold, _), count in confusion.items() if gold == domain)
        wrong = {pred: count for (gold, pred), count in confusion.items() if gold == domain and pred != domain}
        predicted = sum(count for (_, pred), count in confusion.items() if pred == domain)
        precision = confusion[(domain, domain)] / predicted if predicted else float("nan")
        misses = ", ".join(f"{pred} {count}" for pred, count in sorted(wrong.items())) or "-"
        table.append((domain, total, confusion[(domain, domain)] / total, precision, misses))
    accuracy = sum(confusion[(domain, domain)] for domain in DOMAINS) / len(rows)
    return table, accuracy


def main() -> None:
    print("## Quality classifier (hashed 1-2-grams, 2^20 features, logistic regression)\n")
    print("| measure | value |\n|---|---|")
    for name, value in quality_rows():
        print(f"| {name} | {value} |")
    table, accuracy = domain_rows()
    print(f"\n## Domain rules on domain_sample.jsonl (accuracy {accuracy:.3f})\n")
    print("| domain | documents | recall | precision | labelled this, predicted as |\n|---|---|---|---|---|")
    for domain, total, recall, precision, misses in table:
        print(f"| {domain} | {total} | {recall:.2f} | {precision:.2f} | {misses} |")


if __name__ == "__main__":
    main()
