"""URL blocklist: removes pages whose host (or any parent domain) or URL is on a list.

Cheap (a few set look-ups per document), so the runner puts it before extraction.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field

from components.clean.doc import Doc, Filter
from components.params import StrictModel

DEFAULT_BLOCKLIST = Path(__file__).with_name("blocklist.txt")
COMMENT = re.compile(r"(^|\s)#.*")  # a "#" inside a URL (a fragment) is not a comment


class UrlFilterParams(StrictModel):
    enabled: bool = True
    use_default_blocklist: bool = Field(True, description="include the small built-in list (blocklist.txt)")
    blocklist_file: Path | None = Field(
        None, description="extra list: one domain (blocks its subdomains too) or URL (substring) per line, # comments"
    )
    blocklist: list[str] = Field([], description="extra entries, as lines of blocklist_file: takedown requests "
                                 "(`llm-lifecycle lineage --contains URL` lists what they reach)")


class UrlFilter(Filter):
    """Rules: "blocked_domain" (the host is a listed domain or one of its subdomains),
    "blocked_url" (a listed URL, without its scheme, is a substring of the page URL)."""

    name = "url"

    def __init__(self, params: UrlFilterParams = UrlFilterParams()):
        self.params = params
        files = [DEFAULT_BLOCKLIST] if params.use_default_blocklist else []
        files += [params.blocklist_file] if params.blocklist_file else []
        self.domains, self.urls = load_blocklist(files, params.blocklist)

    def __call__(self, doc: Doc) -> str | None:
        if not self.params.enabled or not doc.url:
            return None
        if self._domain_blocked(host_of(doc.url)):
            return "blocked_domain"
        if self.urls:
            url = without_scheme(doc.url.lower())
            if any(entry in url for entry in self.urls):
                return "blocked_url"
        return None

    def _domain_blocked(self, host: str) -> bool:
        # Walk up the labels (a.b.example.com, b.example.com, example.com, com): a listed domain matches
        # itself and its subdomains, never a look-alike such as notexample.com.
        labels = host.split(".")
        return any(".".join(labels[i:]) in self.domains for i in range(len(labels)))


def load_blocklist(files: list[Path], entries: list[str] = ()) -> tuple[frozenset[str], tuple[str, ...]]:
    """Domains (entries without "/") and URL substrings (entries with one) from the given files and entries."""
    domains, urls = set(), []
    lines = [line for path in files for line in Path(path).read_text(encoding="utf-8").splitlines()]
    for line in [*lines, *entries]:
        entry = COMMENT.sub("", line).strip().lower()
        if not entry:
            continue
        if "/" in entry:
            urls.append(without_scheme(entry))
        else:
            domains.add(entry.lstrip("*.").rstrip("."))  # "*.example.com" and "example.com." mean example.com
    return frozenset(domains), tuple(urls)


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".")  # lower-cased, without port or credentials
    except ValueError:  # e.g. an unbalanced "[" in a malformed crawl URL
        return ""


def without_scheme(url: str) -> str:
    """So "http://x.com/a" and "https://x.com/a" match the same entry."""
    return url.split("://", 1)[1] if "://" in url else url
