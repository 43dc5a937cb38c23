"""Near-dedup recall and precision by Jaccard bucket on planted pairs, and the speed of signature().

    .venv/bin/python benchmarks/dedup_accuracy.py [--pairs 300] [--bands 21 --rows 6 --threshold 0.75]

Documents are 200-word windows of the Gutenberg novels in $LLM_LIFECYCLE_DATA_DIR/curated/gutenberg
(default ../shared/data), without the licence text, as lower-cased alphanumeric words so that the
shingles computed here are exactly the component's. Each planted copy replaces random words of its
original by new words until the exact Jaccard of the 5-word shingle sets falls to a target drawn
uniformly in its bucket. All pairs go through one find_duplicates call: a pair is merged if its copy is
removed in favour of its original.
Recall = merged pairs / pairs at J >= 0.8; precision = merged pairs at J >= 0.8 / all removals.
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash

from components.clean.dedup import DedupParams, exact_key, find_duplicates, normalise, signature

DATA = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
BUCKETS = [(0.3, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]
TARGET = 0.8
DOC_WORDS = 200


def documents() -> list[list[str]]:
    docs = []
    for book in sorted((DATA / "curated" / "gutenberg").glob("*.txt")):
        # Only the book: the Project Gutenberg licence around it is the same in every file (true duplicates).
        body = re.search(r"\*\*\* START OF.*?\n(.*)\*\*\* END OF", book.read_text(encoding="utf-8"), re.S)[1]
        words = re.findall(r"[a-z0-9]+", body.lower())
        docs += [words[i:i + DOC_WORDS] for i in range(0, len(words) - DOC_WORDS, DOC_WORDS)]
    return docs


def jaccard(a: list[str], b: list[str], k: int) -> float:
    sa = {tuple(a[i:i + k]) for i in range(len(a) - k + 1)}
    sb = {tuple(b[i:i + k]) for i in range(len(b) - k + 1)}
    return len(sa & sb) / len(sa | sb)


def variant(words: list[str], low: float, high: float, k: int, rng: np.random.Generator) -> tuple[list[str], float]:
    """A copy whose Jaccard with `words` is in [low, high): replace words until it drops under a target."""
    while True:
        copy, target = list(words), rng.uniform(low, high)
        while (similarity := jaccard(words, copy, k)) > target:
            copy[rng.integers(len(copy))] = f"new{rng.integers(1 << 40)}"
        if low <= similarity < high:
            return copy, similarity


def planted(docs: list[list[str]], pairs: int, k: int, seed: int = 0) -> list[tuple[list[str], list[str], float]]:
    rng = np.random.default_rng(seed)
    picks = iter(rng.choice(len(docs), pairs * len(BUCKETS), replace=False))
    return [(docs[i], *variant(docs[i], low, high, k, rng))
            for low, high in BUCKETS for _, i in zip(range(pairs), picks)]


def accuracy(pairs, params: DedupParams) -> str:
    entries = []
    for n, (original, copy, _) in enumerate(pairs):
        for doc_id, words in ((f"orig{n}", original), (f"copy{n}", copy)):
            text = " ".join(words)
            entries.append((doc_id, exact_key(text), signature(text, params)))
    removed = find_duplicates(entries, params)
    merged = [removed.get(f"copy{n}") == ("near", f"orig{n}") for n in range(len(pairs))]
    lines = [f"bands={params.bands} rows={params.rows} num_perm={params.num_perm} threshold={params.threshold}",
             "", "| Jaccard | pairs | merged | merged share |", "|---|---:|---:|---:|"]
    for low, high in BUCKETS:
        inside = [m for m, (_, _, s) in zip(merged, pairs) if low <= s < high]
        lines.append(f"| {low:.1f}-{high:.1f} | {len(inside)} | {sum(inside)} | {np.mean(inside):.3f} |")
    should = [m for m, (_, _, s) in zip(merged, pairs) if s >= TARGET]
    right = sum(m and s >= TARGET for m, (_, _, s) in zip(merged, pairs))
    lines += ["", f"recall at J >= {TARGET}: {np.mean(should):.3f}; precision (removals at J >= {TARGET}): "
                  f"{right / max(len(removed), 1):.3f}; removals outside planted pairs: {len(removed) - sum(merged)}"]
    return "\n".join(lines)


def datasketch_signature(text: str, params: DedupParams) -> np.ndarray:
    """The same shingles through datasketch (SHA-1 per shingle, then its own numpy permutations)."""
    words = normalise(text).split()
    shingles = {" ".join(words[i:i + params.shingle_size]).encode()
                for i in range(max(1, len(words) - params.shingle_size + 1))}
    minhash = MinHash(num_perm=params.num_perm, seed=params.seed)
    minhash.update_batch(list(shingles))
    return minhash.hashvalues


def speed(docs: list[list[str]], params: DedupParams) -> str:
    lines = ["| implementation | docs | words/doc | docs/s (1 core) |", "|---|---:|---:|---:|"]
    for words_per_doc in (DOC_WORDS, 10 * DOC_WORDS):
        group = words_per_doc // DOC_WORDS
        texts = [" ".join(w for doc in docs[i:i + group] for w in doc) for i in range(0, 3000, group)]
        for name, sign in (("numpy (components.clean.dedup.signature)", signature),
                           ("datasketch 2.0.0 MinHash", datasketch_signature)):
            sign(texts[0], params)  # warm caches: permutations, punctuation table
            start = time.perf_counter()
            for text in texts:
                sign(text, params)
            rate = len(texts) / (time.perf_counter() - start)
            lines.append(f"| {name} | {len(texts)} | {words_per_doc} | {rate:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300, help="planted pairs per Jaccard bucket")
    for name in ("bands", "rows", "num_perm"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    parser.add_argument("--threshold", type=float)
    args = parser.parse_args()
    overrides = {k: v for k, v in vars(args).items() if k != "pairs" and v is not None}
    params = DedupParams(**overrides)
    docs = documents()
    pairs = planted(docs, args.pairs, params.shingle_size)
    print(accuracy(pairs, params), "", speed(docs, params), sep="\n")


if __name__ == "__main__":
    main()
