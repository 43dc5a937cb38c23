"""Main-text extraction quality and speed of the clean stage's Extract step, per extractor.

On the 166 annotated pages of html/trafilatura-eval (trafilatura's own evaluation set): for each page a few
snippets of the main text ("with") and of its boilerplate ("without"). Reported: the share of "with" snippets
found in the extract (recall-like), the share of "without" snippets absent from it (precision-like), pages with
nothing extracted, and pages per second (extraction only, one core, HTML already decoded).

    .venv/bin/python benchmarks/extraction_quality.py [--data-dir ../shared/data]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

from components.clean.doc import Doc
from components.clean.extract import Extract, ExtractParams

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "trafilatura (default: fast, favor_precision)": ExtractParams(extractor="trafilatura"),
    "trafilatura, fast=False": ExtractParams(extractor="trafilatura", fast=False),
    "resiliparse": ExtractParams(extractor="resiliparse"),
}


def load_pages(eval_dir: Path) -> list[dict]:
    entries = json.loads((eval_dir / "evaldata_en.json").read_text())
    return [
        {
            "url": url,
            "html": gzip.decompress((eval_dir / "html" / entry["file"]).read_bytes()).decode("utf-8", "replace"),
            "with": entry["with"],
            "without": entry["without"],
        }
        for url, entry in entries.items()
    ]


def evaluate(params: ExtractParams, pages: list[dict]) -> dict:
    extract = Extract(params)
    found = absent = empty = 0
    seconds = 0.0
    for page in pages:
        doc = Doc(id=page["url"], text="", source="crawl", url=page["url"], meta={"html": page["html"]})
        start = time.perf_counter()
        empty += extract(doc) is not None
        seconds += time.perf_counter() - start
        found += sum(snippet in doc.text for snippet in page["with"])
        absent += sum(snippet not in doc.text for snippet in page["without"])
    return {
        "with": found / sum(len(p["with"]) for p in pages),
        "without": absent / sum(len(p["without"]) for p in pages),
        "empty": empty,
        "pages_per_s": len(pages) / seconds,
    }


def main() -> None:
    default_data = os.environ.get("LLM_LIFECYCLE_DATA_DIR") or REPO.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    pages = load_pages(parser.parse_args().data_dir / "html" / "trafilatura-eval")
    print(f"{len(pages)} pages of html/trafilatura-eval\n")
    print("| extractor | must-contain found | must-not-contain absent | empty pages | pages/s |")
    print("|---|---|---|---|---|")
    for name, params in VARIANTS.items():
        r = evaluate(params, pages)
        print(f"| {name} | {r['with']:.1%} | {r['without']:.1%} | {r['empty']} | {r['pages_per_s']:.0f} |")


if __name__ == "__main__":
    main()
