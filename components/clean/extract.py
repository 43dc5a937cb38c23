"""Main-text extraction: the page's HTML (doc.meta["html"]) becomes doc.text, its <title> doc.meta["title"].

Two extractors (see benchmarks/extraction_quality.py for how they compare on 166 annotated pages):
- trafilatura: the better boilerplate removal (fewer menus, footers, "related posts"), the slower one. By default
  its fast mode (no fallback extractors), and its full mode again for the pages where the fast one finds (almost)
  nothing: on the 166 pages this keeps as much main text as trafilatura's own default at the fast mode's speed,
  and no page that the full mode extracts is left empty (fast mode alone left 41 of 237 crawl pages empty);
- resiliparse: several times faster, keeps more of the page, boilerplate included.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree
from trafilatura import bare_extraction
from trafilatura.utils import load_html

from components.clean.doc import Doc, Filter
from components.params import StrictModel

WHITESPACE = re.compile(r"\s+")


class ExtractParams(StrictModel):
    extractor: Literal["trafilatura", "resiliparse"] = "trafilatura"
    include_tables: bool = Field(True, description="keep table cells (trafilatura's default; without them 2 points "
                                                   "less main text is found on the 166 annotated pages)")
    fast: bool = Field(True, description="trafilatura: skip its fallback extractors (about 1.5x faster)")
    retry_below_chars: int | None = Field(
        250, ge=1, description="trafilatura, fast mode: extract again in full mode when the fast text is shorter than "
        "this (empty included) and keep the full mode's text; 250 chars is about Gopher's 50-word minimum, so only "
        "pages that would be removed anyway pay the second pass. null: never retry")
    favor_precision: bool = Field(False, description="trafilatura: drop doubtful blocks rather than keep them (more "
                                                     "boilerplate-free, 4-6 points less main text)")
    alt_texts: bool = Field(False, description="resiliparse: keep images' alt texts (mostly 'logo', 'icon')")


class Extract(Filter):
    """Rule: "no_text" (the extractor found no main text: an empty page, a page of links, a redirect stub)."""

    name = "extract"

    def __init__(self, params: ExtractParams = ExtractParams()):
        self.params = params
        self._extract = _trafilatura if params.extractor == "trafilatura" else _resiliparse

    def __call__(self, doc: Doc) -> str | None:
        html = doc.meta.pop("html", None)  # popped so the page's HTML is freed once it is no longer needed
        if html is None:  # curated text comes without HTML and is already text
            return None if doc.text.strip() else "no_text"
        text, title = self._extract(html, doc.url, self.params)
        if title:
            doc.meta["title"] = title
        doc.text = (text or "").strip()
        return None if doc.text else "no_text"


def _trafilatura(html: str, url: str | None, params: ExtractParams) -> tuple[str | None, str | None]:
    tree = load_html(html)
    if tree is None:  # not HTML at all
        return None, None
    # The <title> is read here: trafilatura's own title comes with with_metadata=True, which also runs
    # author and date extraction and makes the whole step about 2.5x slower.
    title = _clean_title(tree.findtext(".//title"))
    text = _trafilatura_text(tree, url, params, fast=params.fast)
    if params.fast and params.retry_below_chars and len((text or "").strip()) < params.retry_below_chars:
        # A fresh parse: trafilatura prunes the tree it is given.
        text = _trafilatura_text(load_html(html), url, params, fast=False) or text
    return text, title


def _trafilatura_text(tree, url: str | None, params: ExtractParams, fast: bool) -> str | None:
    result = bare_extraction(
        tree,
        url=url,
        fast=fast,
        favor_precision=params.favor_precision,
        include_comments=False,  # reader comments are mostly short, repetitive and off-topic
        include_tables=params.include_tables,
        deduplicate=False,  # its cache is per process and order-dependent; dedup is its own stage
    )
    return result.text if result else None


def _resiliparse(html: str, url: str | None, params: ExtractParams) -> tuple[str | None, str | None]:
    tree = HTMLTree.parse(html)
    text = extract_plain_text(
        tree,
        preserve_formatting=True,  # keep line breaks: the line-based quality rules need them
        main_content=True,
        alt_texts=params.alt_texts,
        skip_elements=None if params.include_tables else ["table"],
    )
    return text, _clean_title(tree.title)


def _clean_title(title: str | None) -> str | None:
    title = WHITESPACE.sub(" ", title or "").strip()
    return title or None
