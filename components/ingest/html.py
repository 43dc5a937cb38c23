"""Read a saved HTML file (`.html`, `.htm`, `.xhtml`, optionally gzipped) as one crawl record, the same row a WARC
response gives, so folders of HTML dumps can be ingested beside WARC files.

What a WARC record says and a file does not is filled in: the URL is the page's own canonical link (or og:url),
else the file's `file://` URL; the fetch time is the file's modification time (for a remote file, the time it is
read: the page was fetched no later than that); the record id is a UUID derived
from the file's URL, so re-ingesting the same folder gives the same ids.
"""
from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from components.ingest.params import CrawlParams
from components.ingest.sources import SourceStream
from components.ingest.warc import Skip, decode_html, payload_digest

HTML_SUFFIXES = (".html", ".htm", ".xhtml")
URL_SNIFF_BYTES = 256 * 1024  # the <head>, where canonical links live, even on pages with big inline scripts
CANONICAL = re.compile(rb"<link\b[^>]*\brel\s*=\s*[\"']?canonical\b[^>]*>", re.IGNORECASE)
OG_URL = re.compile(rb"<meta\b[^>]*\bproperty\s*=\s*[\"']og:url[\"'][^>]*>", re.IGNORECASE)
ABSOLUTE_URL = re.compile(rb"\b(?:href|content)\s*=\s*[\"']?(https?://[^\"'\s>]+)", re.IGNORECASE)


def is_html_file(url: str) -> bool:
    return url.lower().removesuffix(".gz").endswith(HTML_SUFFIXES)


def read_html_file(stream: SourceStream, params: CrawlParams) -> Iterator[dict | Skip]:
    """Yield the file's row, or a Skip with the reason it is not kept (read errors raise, as for WARC files)."""
    raw = stream.read(params.max_html_bytes + 1)
    if stream.url.lower().endswith(".gz"):
        try:  # at most max_html_bytes + 1 bytes out: a huge (or malicious) archive never enters memory
            raw = zlib.decompressobj(wbits=47).decompress(raw, params.max_html_bytes + 1)
        except zlib.error as error:
            yield Skip("unreadable_file", f"{type(error).__name__}: {error}")
            return
    if len(raw) > params.max_html_bytes:
        yield Skip("too_large")
        return
    if len(raw) < params.min_html_bytes:
        yield Skip("too_small")
        return
    decoded = decode_html(raw, None)  # no HTTP header: the <meta> charset, else a detected one
    if decoded is None:
        yield Skip("undecodable")
        return
    html, charset = decoded
    file_url = _file_url(stream.url)
    yield {
        "record_id": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, file_url)}>",
        "url": page_url(raw) or file_url,
        "fetch_time": _modified(stream.url),
        "payload_digest": payload_digest(raw),
        "html": html,
        "charset": charset,
        "source": stream.url,
        "content_length": len(raw),
    }


def page_url(html: bytes) -> str | None:
    """The absolute URL the page declares for itself: <link rel="canonical">, else <meta property="og:url">."""
    head = html[:URL_SNIFF_BYTES]
    for tag in (CANONICAL, OG_URL):
        found = tag.search(head)
        url = found and ABSOLUTE_URL.search(found.group(0))
        if url:
            return url.group(1).decode("utf-8", "replace")
    return None


def _file_url(url: str) -> str:
    return url if "://" in url else Path(url).resolve().as_uri()


def _modified(url: str) -> datetime:
    if "://" in url and not url.startswith("file://"):
        return datetime.now(timezone.utc)
    return datetime.fromtimestamp(Path(url.removeprefix("file://")).stat().st_mtime, tz=timezone.utc)
