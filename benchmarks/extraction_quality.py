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

from trafilatura import bare_extraction

from components.clean.doc import Doc
from components.clean.extract import Extract, ExtractParams

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "trafilatura (default here: fast, full mode under 250 chars, tables)": ExtractParams(),
    "trafilatura, fast only (retry_below_chars=null)": ExtractParams(retry_below_chars=None),
    "trafilatura, full mode (fast=False)": ExtractParams(fast=False),
    "trafilatura, the old default here (fast, favor_precision, no tables)": ExtractParams(
        favor_precision=True, include_tables=False, retry_below_chars=None),
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


def trafilatura_own_default(page: dict) -> str:
    """trafilatura's extraction with its own defaults (full mode, tables and comments kept): the reference."""
    result = bare_extraction(page["html"], url=page["url"])
    return ((result.text if result else None) or "").strip()


def evaluate(extract, pages: list[dict]) -> dict:
    """`extract(page)` returns the page's text."""
    found = absent = empty = 0
    seconds = 0.0
    for page in pages:
        start = time.perf_counter()
        text = extract(page)
        seconds += time.perf_counter() - start
        empty += not text
        found += sum(snippet in text for snippet in page["with"])
        absent += sum(snippet not in text for snippet in page["without"])
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
    variants = {"trafilatura's own default (bare_extraction(html, url))": trafilatura_own_default,
                **{name: _step(params) for name, params in VARIANTS.items()}}
    for name, extract in variants.items():
        r = evaluate(extract, pages)
        print(f"| {name} | {r['with']:.1%} | {r['without']:.1%} | {r['empty']} | {r['pages_per_s']:.0f} |")


def _step(params: ExtractParams):
    """The clean stage's Extract step as a page → text function."""
    step = Extract(params)

    def extract(page: dict) -> str:
        doc = Doc(id=page["url"], text="", source="crawl", url=page["url"], meta={"html": page["html"]})
        step(doc)
        return doc.text

    return extract


if __name__ == "__main__":
    main()
