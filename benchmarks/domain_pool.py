"""Draw fresh, unlabelled documents for labelling by domain (issue 17 item 3): the held-out test set and extra
training documents for the domain classifier, none of them among components/clean/domain_sample.jsonl's 81.

    .venv/bin/python -m benchmarks.domain_pool --out /tmp/domain_pool [--n 300] [--seed 17]

Same sources and form as domain_sample.jsonl: the shared crawl's pages and trafilatura's evaluation pages
(extracted as the clean stage does, ≥ 200 characters), C4 and dolma CCNet web text, wiki_demo; the first 1,500
characters. Documents are drawn at random from the pool (so the domains come in the proportions the stage sees),
shuffled, and dealt alternately into `test.jsonl` and `train.jsonl` without labels; the labeller adds `domain`.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

from benchmarks.classifier_accuracy import DATA, SAMPLE, crawl_pages, extracted, texts

CHARS = 1500


def eval_pages_with_urls() -> list[tuple[str, str]]:
    index = json.loads((DATA / "html" / "trafilatura-eval" / "evaldata_en.json").read_text())
    folder = DATA / "html" / "trafilatura-eval" / "html"
    return [(url, gzip.open(folder / entry["file"], "rt", errors="replace").read()) for url, entry in index.items()]


def dolma() -> list[tuple[str, str]]:
    rows = []
    for path in sorted((DATA / "curated" / "web-docs" / "dolma-tests").glob("*.jsonl.gz")):
        rows += [(row["id"], row["text"]) for row in map(json.loads, gzip.open(path, "rt"))]
    return rows


def pool() -> list[dict]:
    """Every candidate document, as {source, url, text}."""
    docs = [("crawl", url, text) for url, text in extracted_with_urls(crawl_pages())]
    docs += [("trafilatura-eval", url, text) for url, text in extracted_with_urls(eval_pages_with_urls())]
    docs += [("c4_demo", None, text) for text in texts("llamafactory-demo/c4_demo.jsonl", "jsonl")]
    docs += [("dolma", url, text) for url, text in dolma()]
    docs += [("wiki_demo", None, text) for text in texts("llamafactory-demo/wiki_demo.txt", "lines")]
    return [{"source": source, "url": url, "text": text[:CHARS]} for source, url, text in docs]


def extracted_with_urls(pages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(url, text) for url, html in pages for text in extracted([(url, html)])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    labelled = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    seen_urls = {row["url"] for row in labelled if row["url"]}
    seen_texts = {row["text"][:200] for row in labelled}
    fresh = [d for d in pool() if d["url"] not in seen_urls and d["text"][:200] not in seen_texts]
    fresh = list({d["text"][:200]: d for d in fresh}.values())  # the crawl repeats some pages
    picked = random.Random(args.seed).sample(fresh, min(args.n, len(fresh)))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in (("test", picked[0::2]), ("train", picked[1::2])):
        with open(args.out / f"{name}.jsonl", "w") as f:
            for number, doc in enumerate(part):
                f.write(json.dumps({"id": f"{name}-{number:03d}", **doc}, ensure_ascii=False) + "\n")
    print(f"{len(fresh)} fresh documents, {len(picked)} drawn: {args.out}/test.jsonl, {args.out}/train.jsonl")


if __name__ == "__main__":
    main()
