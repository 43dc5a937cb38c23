"""Expand source URIs into concrete file URLs, and open those as sequential byte streams.

Local paths and globs, `s3://` keys and globs (s3fs), single `https://` files and
`commoncrawl://CRAWL-ID` all go through fsspec. Remote files are streamed, never downloaded whole.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice

import fsspec

from components.ingest.params import CrawlParams, S3Options, Source

COMMONCRAWL_URL_ENV = "LLM_LIFECYCLE_COMMONCRAWL_URL"
COMMONCRAWL_URL = "https://data.commoncrawl.org"
S3_BLOCK_BYTES = 8 << 20  # s3fs reads ahead one block per range request; its 50 MiB default is wasteful here


class SourceNotFound(Exception):
    """A source URI matches no file: a configuration error, not worth retrying."""


class SourceReadError(ConnectionError):
    """A remote read failed with a non-OSError (e.g. aiohttp's payload errors); retrying may help."""


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
    else:
        paths = [path] if fs.isfile(path) else []
    if not paths:
        raise SourceNotFound(f"no file matches {uri!r}: check the path or glob, the bucket and the credentials")
    protocol = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    return [protocol + p for p in paths]


def _commoncrawl_urls(crawl: str, n_files: int) -> list[str]:
    base = os.environ.get(COMMONCRAWL_URL_ENV, COMMONCRAWL_URL).rstrip("/")
    listing = f"{base}/crawl-data/{crawl}/warc.paths.gz"
    try:
        # Streamed and cut short: a crawl lists ~100k files and only the first few are wanted.
        with fsspec.open(listing, "rt", compression="gzip", block_size=0) as lines:
            paths = [line.strip() for line in islice(lines, n_files)]
    except FileNotFoundError as error:
        raise SourceNotFound(f"{listing} not found: check the crawl id in 'commoncrawl://{crawl}' "
                             f"(e.g. CC-MAIN-2024-22) and {COMMONCRAWL_URL_ENV}") from error
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

    def read(self, size: int = -1) -> bytes:
        try:
            return self._raw.read(size)
        except OSError as error:
            self.error = error
            raise
        except Exception as error:
            self.error = SourceReadError(f"reading {self.url}: {type(error).__name__}: {error}")
            raise self.error from error

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()


@contextmanager
def open_source(url: str, s3: S3Options) -> Iterator[SourceStream]:
    """Open one file URL for sequential reading; closing it stops any remote transfer."""
    try:
        raw = _open_raw(url, s3)
    except FileNotFoundError as error:
        raise SourceNotFound(f"{url} not found") from error
    except OSError:
        raise
    except Exception as error:  # e.g. aiohttp.ClientResponseError for an HTTP 5xx
        raise SourceReadError(f"opening {url}: {type(error).__name__}: {error}") from error
    stream = SourceStream(raw, url)
    try:
        yield stream
    finally:
        stream.close()


def _open_raw(url: str, s3: S3Options):
    if url.startswith(("http://", "https://")):
        return fsspec.open(url, "rb", block_size=0).open()  # block_size=0: one streamed GET, no range requests
    if url.startswith("s3://"):
        return fsspec.open(url, "rb", block_size=S3_BLOCK_BYTES, **_storage_options(url, s3)).open()
    return open(url, "rb")
