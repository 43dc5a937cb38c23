"""Expand source URIs into concrete file URLs, and open those as sequential byte streams.

Local paths, folders and globs, `s3://` keys and globs (s3fs through fsspec; any other fsspec protocol such as
`github://org:repo@commit/path` too), single `https://` files and `commoncrawl://CRAWL-ID`. A folder stands for
the WARC and HTML files below it. Remote files are streamed, never downloaded whole.

HTTP uses urllib rather than fsspec's aiohttp filesystem: aiohttp's default 5-minute total timeout would
cut a slow 1 GB Common Crawl download, and fsspec reports every failed open (refused, 500, 404) as
FileNotFoundError, which would turn a retryable outage into "source not found".
"""
from __future__ import annotations

import gzip
import io
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice

import fsspec

from components.ingest.params import CrawlParams, S3Options, Source

COMMONCRAWL_URL_ENV = "LLM_LIFECYCLE_COMMONCRAWL_URL"
COMMONCRAWL_URL = "https://data.commoncrawl.org"
S3_BLOCK_BYTES = 8 << 20  # s3fs reads ahead one block per range request; its 50 MiB default is wasteful here
HTTP_TIMEOUT_S = 60  # per socket operation, not for the whole transfer
USER_AGENT = "llm-lifecycle-ingest (+https://commoncrawl.org/terms-of-use)"


class SourceNotFound(Exception):
    """A source URI matches no file: a configuration error, not worth retrying."""


class SourceReadError(ConnectionError):
    """A remote read failed with a non-OSError (e.g. http.client.IncompleteRead); retrying may help."""


def expand_source(source: Source, params: CrawlParams) -> list[str]:
    """The file URLs a source stands for, sorted; raises SourceNotFound if there are none."""
    uri = source.uri
    if uri.startswith("commoncrawl://"):
        return _commoncrawl_urls(uri.removeprefix("commoncrawl://"), params.commoncrawl_files)
    if uri.startswith(("http://", "https://")):
        return [uri]  # checked when opened: an HTTP existence probe would hide network errors as "missing"
    fs, path = fsspec.core.url_to_fs(uri, **_storage_options(uri, params.s3))
    if any(char in path for char in "*?["):
        paths = sorted(fs.glob(path))
    elif fs.isdir(path):  # every WARC and HTML file below it; other files (licences, indexes) are not records
        paths = sorted(p for p in fs.find(path) if is_record_file(p))
    else:
        paths = [path] if fs.isfile(path) else []
    if not paths:
        raise SourceNotFound(f"no file matches {uri!r}: check the path or glob, the bucket and the credentials")
    # What the filesystem drops from the URI to get its paths (s3://; github://org:repo@commit/), put back
    prefix = uri[: len(uri) - len(path)] if "://" in uri and uri.endswith(path) else uri.split("://", 1)[0] + "://"
    return [(prefix if "://" in uri else "") + p for p in paths]


def is_record_file(path: str) -> bool:
    """A file ingest reads: a WARC (.warc, .warc.gz) or a saved HTML page (.html, .htm, .xhtml, maybe .gz)."""
    name = path.lower().removesuffix(".gz")
    return name.endswith((".warc", ".html", ".htm", ".xhtml"))


def _commoncrawl_urls(crawl: str, n_files: int) -> list[str]:
    base = os.environ.get(COMMONCRAWL_URL_ENV, COMMONCRAWL_URL).rstrip("/")
    listing = f"{base}/crawl-data/{crawl}/warc.paths.gz"
    try:
        response = _open_http(listing)
    except SourceNotFound as error:
        raise SourceNotFound(f"{error}: check the crawl id in 'commoncrawl://{crawl}' "
                             f"(e.g. CC-MAIN-2024-22) and {COMMONCRAWL_URL_ENV}") from error
    # Streamed and cut short: a crawl lists ~100k files and only the first few are wanted.
    with response, io.TextIOWrapper(gzip.GzipFile(fileobj=response), "utf-8") as lines:
        paths = [line.strip() for line in islice(lines, n_files)]
    if not paths:
        raise SourceNotFound(f"{listing} lists no WARC files")
    return [f"{base}/{path}" for path in paths]


def _storage_options(uri: str, s3: S3Options) -> dict:
    if not uri.startswith("s3://"):
        return {}
    options: dict = {"anon": s3.anon}
    if s3.endpoint_url:
        options["client_kwargs"] = {"endpoint_url": s3.endpoint_url}
    return options


class SourceStream:
    """A byte stream that remembers its own read errors, so WARC parse errors can be told apart from I/O failures."""

    def __init__(self, raw, url: str):
        self._raw = raw
        self.url = url
        self.error: Exception | None = None
        self._position = 0  # fastwarc asks tell(), which HTTP responses cannot answer

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._raw.read(size)
        except OSError as error:
            self.error = error
            raise
        except Exception as error:  # e.g. http.client.IncompleteRead, botocore errors
            self.error = SourceReadError(f"reading {self.url}: {type(error).__name__}: {error}")
            raise self.error from error
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._raw.close()


@contextmanager
def open_source(url: str, s3: S3Options) -> Iterator[SourceStream]:
    """Open one file URL for sequential reading; closing it stops any remote transfer."""
    if url.startswith(("http://", "https://")):
        raw = _open_http(url)
    elif "://" in url:  # s3:// and the other fsspec filesystems (github://, gcs://, ...)
        fs, path = fsspec.core.url_to_fs(url, **_storage_options(url, s3))
        try:
            raw = fs.open(path, "rb", block_size=S3_BLOCK_BYTES) if url.startswith("s3://") else fs.open(path, "rb")
        except FileNotFoundError as error:
            raise SourceNotFound(f"{url} not found") from error
    else:
        raw = open(url, "rb")
    stream = SourceStream(raw, url)
    try:
        yield stream
    finally:
        stream.close()


def _open_http(url: str):
    """A streaming HTTP response. Missing files raise SourceNotFound; other failures are OSErrors (retryable)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code in (404, 410):
            raise SourceNotFound(f"{url} not found (HTTP {error.code})") from error
        raise
