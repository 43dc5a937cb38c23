"""The unit every cleaning step sees: one document, its text and what steps learned about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Doc:
    id: str  # the WARC-Record-ID for web pages; "<source>/<n>" for curated text
    text: str  # empty until extraction, for web pages
    source: str  # "crawl", or a curated source's name
    url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # html (until extracted), title, language, ...


class Filter:
    """A step that keeps or removes one document at a time (and may rewrite its text or add meta).

    `__call__` returns None to keep the document, or the name of the rule that removed it; the runner
    records (step name, rule) for every removal and counts documents and characters in and out."""

    name: str = "filter"

    def __call__(self, doc: Doc) -> str | None:
        raise NotImplementedError
