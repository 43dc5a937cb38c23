"""Curated high-quality text (books, encyclopedias, speeches, clean web text) as documents.

Used as the quality classifier's positives and in the pretraining mix. Files are read through fsspec
(local paths and globs, s3://, https://), compressed ones (.gz, .bz2, ...) decompressed on the fly.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import fsspec

from components.clean.doc import Doc
from components.curated.params import CuratedParams, CuratedSource
from components.curated.readers import READERS, SPLITTABLE_FORMATS
from components.ingest.sources import SourceNotFound

__all__ = ["CuratedParams", "CuratedSource", "SourceNotFound", "read_curated", "read_source"]

GLOB_CHARS = "*?["
# Text files are decompressed by their name (.gz, .bz2, ...) and decoded here; Gutenberg files start with a
# BOM and end lines with CRLF. Binary (zip) files are opened raw: fsspec would take ".zip" for a compression
# and open only its first member.
TEXT_OPTIONS = {"compression": "infer", "encoding": "utf-8-sig", "newline": None}


def read_curated(params: CuratedParams) -> Iterator[Doc]:
    """Every source's documents, source after source, ids "<name>/<n>" counted from 0 per source."""
    for source in params.sources:
        yield from read_source(source)


def read_source(source: CuratedSource) -> Iterator[Doc]:
    meta = {"domain": source.domain} if source.domain else {}
    texts = (text for text in _texts(source) if text.strip())
    for number, text in enumerate(islice(texts, source.max_docs)):
        yield Doc(id=f"{source.name}/{number}", text=text, source=source.name, url=None, meta=dict(meta))


def _texts(source: CuratedSource) -> Iterator[str]:
    mode, reader = READERS[source.format]
    options = {"split_chars": source.split_chars} if source.format in SPLITTABLE_FORMATS else {}
    for opened in _open_files(source.uri, mode):
        with opened as file:
            try:
                yield from reader(file, **options)
            except ValueError as error:  # bad content (not I/O): say which file
                raise ValueError(f"{opened.path}: {error}") from error


def _open_files(uri: str, mode: str) -> list[fsspec.core.OpenFile]:
    """The files a URI stands for, sorted; a glob that matches nothing is a configuration error."""
    options = TEXT_OPTIONS if mode == "rt" else {}
    if uri.startswith(("http://", "https://")) or not any(char in uri for char in GLOB_CHARS):
        return [fsspec.open(uri, mode, **options)]  # an HTTP "?" is a query, not a glob
    files = sorted(fsspec.open_files(uri, mode, **options), key=lambda opened: opened.path)
    if not files:
        raise SourceNotFound(f"no file matches {uri!r}")
    return files
