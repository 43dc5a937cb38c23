"""The labelled pages of the domain classifier (components/clean/domain_labels.jsonl): draw pages to label, and fit
the shipped model on the labels.

    .venv/bin/python -m benchmarks.domain_pool draw --out /tmp/domain_pool [--n 300] [--seed 17]
    .venv/bin/python -m benchmarks.domain_pool fit      # writes components/clean/domain_model.safetensors
    .venv/bin/python -m benchmarks.domain_pool score    # the shipped classifier on the held-out pages

score: accuracy on the 150 held-out pages (Wilson 95% interval; the majority class as the chance line), recall
and precision per domain, how often the URL rules decide and how precise they are, and the labels' own
agreement (75 held-out pages labelled twice, independently).

draw (issue 17 item 3): fresh, unlabelled documents — none of the 80 pages labelled in round 1, on which the
earlier text rules were tuned — for a held-out test set and more training documents. Sources: the shared
crawl's pages and trafilatura's evaluation pages (extracted as the clean stage does, ≥ 200 characters), C4 and
dolma CCNet web text, wiki_demo; the first 1,500 characters. Documents are drawn at random from the pool (so the domains come in the proportions the stage sees),
shuffled, and dealt alternately into `test.jsonl` and `train.jsonl` without labels; the labeller adds `domain`.
What the draw left (the rest of the pool) goes to `more.jsonl`, for more training documents.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from benchmarks.classifier_accuracy import DATA, crawl_pages, extracted, texts
from components.clean import domain
from components.evaluate.stats import wilson

CHARS = 1500
LABELS = domain.MODEL_FILE.with_name("domain_labels.jsonl")


def eval_pages_with_urls() -> list[tuple[str, str]]:
    index = json.loads((DATA / "html" / "trafilatura-eval" / "evaldata_en.json").read_text())
    folder = DATA / "html" / "trafilatura-eval" / "html"
    return [(url, gzip.open(folder / entry["file"], "rt", errors="replace").read()) for url, entry in index.items()]


def dolma() -> list[tuple[str, str]]:
    rows = []
    for path in sorted((DATA / "curated" / "web-docs" / "dolma-tests").glob("*.jsonl.gz")):
        rows += [(row["id"], row["text"]) for row in map(json.loads, gzip.open(path, "rt"))]
    return rows


SOURCES = {  # name → its pages as (url or None, text)
    "crawl": lambda: extracted_with_urls(crawl_pages()),
    "trafilatura-eval": lambda: extracted_with_urls(eval_pages_with_urls()),
    "c4_demo": lambda: [(None, text) for text in texts("llamafactory-demo/c4_demo.jsonl", "jsonl")],
    "dolma": dolma,
    "wiki_demo": lambda: [(None, text) for text in texts("llamafactory-demo/wiki_demo.txt", "lines")],
}


def pool(sources: Iterable[str] = SOURCES) -> list[dict]:
    """Every candidate document, as {key, source, url, text}; key: the URL, else "<source>:<line number>"."""
    return [{"key": url or f"{source}:{number}", "source": source, "url": url, "text": text[:CHARS]}
            for source in sources for number, (url, text) in enumerate(SOURCES[source]())]


def extracted_with_urls(pages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(url, text) for url, html in pages for text in extracted([(url, html)])]


def labelled(split: str, sources: Iterable[str] = SOURCES) -> list[dict]:
    """The labelled pages of one split ("train" or "test") from these sources, with their text from the shared
    data and their URL (None where the source has none)."""
    text = {row["key"]: row["text"] for row in pool(sources)}
    rows = [row for row in map(json.loads, LABELS.read_text().splitlines())
            if row["split"] == split and row["source"] in sources]
    missing = [row["key"] for row in rows if row["key"] not in text]
    if missing:
        raise SystemExit(f"{len(missing)} labelled pages not found in {DATA} (first: {missing[0]}): "
                         "is LLM_LIFECYCLE_DATA_DIR the shared data folder?")
    return [row | {"text": text[row["key"]], "url": row["key"] if "://" in row["key"] else None} for row in rows]


def fit_shipped() -> None:
    rows = labelled("train")
    model = domain.fit([row["text"] for row in rows], [row["domain"] for row in rows])
    model.save(domain.MODEL_FILE)
    print(f"fitted on {len(rows)} labelled pages: {domain.MODEL_FILE}")


def score() -> None:
    test = labelled("test")
    decided = [domain.classify(row["url"], row["text"]) for row in test]
    gold = [row["domain"] for row in test]
    right = sum(pred == truth for (pred, _), truth in zip(decided, gold))
    low, high = wilson(right, len(test))
    majority, count = Counter(gold).most_common(1)[0]
    print(f"held out: {right}/{len(test)} = **{right / len(test):.3f}** (Wilson 95% {low:.3f}-{high:.3f}); "
          f"always '{majority}': {count / len(test):.3f}\n")
    print("| domain | held-out pages | recall | precision |\n|---|---|---|---|")
    for name in domain.DOMAINS:
        hits = sum(pred == truth == name for (pred, _), truth in zip(decided, gold))
        predicted = sum(pred == name for pred, _ in decided)
        total = gold.count(name)
        print(f"| {name} | {total} | {hits / total if total else float('nan'):.2f} | "
              f"{hits / predicted if predicted else float('nan'):.2f} |")
    by_url = [(pred, truth) for (pred, rule), truth in zip(decided, gold) if rule.startswith("url:")]
    print(f"\nURL rules decided {len(by_url)} of {len(test)} held-out pages, "
          f"{sum(p == t for p, t in by_url)} of them right")
    twice = [row for row in test if "second_opinion" in row]
    agree = sum(row["second_opinion"] == row["domain"] for row in twice)
    print(f"labels: two labellers agree on {agree}/{len(twice)} = {agree / len(twice):.3f} held-out pages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["draw", "fit", "score"])
    parser.add_argument("--out", type=Path, help="draw: the folder to write to")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    if args.command == "fit":
        return fit_shipped()
    if args.command == "score":
        return score()
    draw(args.out, args.n, args.seed)


def draw(out: Path, n: int, seed: int) -> None:
    """Pages not labelled in round 1 (the rules were tuned on those), drawn at random: the draw of round 2."""
    first_round = {row["key"] for row in map(json.loads, LABELS.read_text().splitlines()) if row["round"] == 1}
    candidates = pool()
    # the crawl repeats some pages under other URLs: a copy of a round-1 page is not fresh either
    seen = {d["text"][:200] for d in candidates if d["key"] in first_round}
    fresh = [d for d in candidates if d["key"] not in first_round and d["text"][:200] not in seen]
    fresh = list({d["text"][:200]: d for d in fresh}.values())  # the crawl repeats some pages
    picked = random.Random(seed).sample(fresh, min(n, len(fresh)))
    out.mkdir(parents=True, exist_ok=True)
    rest = [d for d in fresh if d not in picked]
    for name, part in (("test", picked[0::2]), ("train", picked[1::2]), ("more", rest)):
        with open(out / f"{name}.jsonl", "w") as f:
            for number, doc in enumerate(part):
                f.write(json.dumps({"id": f"{name}-{number:03d}", **doc}, ensure_ascii=False) + "\n")
    print(f"{len(fresh)} fresh documents, {len(picked)} drawn: test.jsonl, train.jsonl, "
          f"the other {len(rest)}: more.jsonl in {out}")


if __name__ == "__main__":
    main()
