"""Crawl ingest: WARC files (and saved HTML pages) in, HTTP-200 HTML responses out as Parquet shards plus a manifest."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from components.ingest.html import is_html_file, read_html_file
from components.ingest.params import CrawlParams, Source
from components.ingest.sources import SourceNotFound, expand_source, open_source
from components.ingest.warc import Skip, read_warc
from components.ingest.writer import SCHEMA, write_manifest
from components.storage import ShardWriter

__all__ = ["CrawlParams", "Source", "SourceNotFound", "ingest"]


def ingest(params: CrawlParams, out_dir: Path, *, progress: bool = True) -> dict:
    """Read every source, keep HTTP-200 HTML responses, write Parquet shards + manifest.json into out_dir.

    Returns the manifest. Raises SourceNotFound when a source matches no file, and OSError (ConnectionError for
    remote reads) when reading fails; bad bytes in a file are counted in the manifest instead.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Expanded up front, so a mistyped source fails before hours of reading the others.
    files_by_source = [(source, expand_source(source, params)) for source in params.sources]
    writer = ShardWriter(out_dir, "records", params.shard_records, schema=SCHEMA)
    sources = []
    with tqdm(total=params.max_records, unit=" records", desc="ingest", disable=not progress, file=sys.stderr) as bar:
        for source, urls in files_by_source:
            files = []
            sources.append({"uri": source.uri, "files": files})
            for url in urls:
                if _is_full(writer, params):
                    break
                files.append(_ingest_file(url, params, writer, bar))
    writer.flush()
    manifest = _manifest(writer, sources)
    write_manifest(out_dir, manifest)
    return manifest


def _ingest_file(url: str, params: CrawlParams, writer: ShardWriter, bar: tqdm) -> dict:
    """Read one WARC (or HTML) file into the writer, stopping (and closing the stream) once max_records are kept."""
    entry = {"url": url, "records_read": 0, "kept": 0, "html_bytes": 0, "skipped": Counter(), "error": None}
    read_records = read_html_file if is_html_file(url) else read_warc
    with open_source(url, params.s3) as stream:
        for item in read_records(stream, params):
            if isinstance(item, Skip):
                entry["skipped"][item.reason] += 1
                entry["records_read"] += item.error is None  # a file-level error is not a record
                entry["error"] = item.error or entry["error"]
                continue
            writer.add(item)
            bar.update()
            entry["records_read"] += 1
            entry["kept"] += 1
            entry["html_bytes"] += item["content_length"]
            if _is_full(writer, params):
                break
    entry["skipped"] = dict(entry["skipped"])
    return entry


def _is_full(writer: ShardWriter, params: CrawlParams) -> bool:
    return params.max_records is not None and writer.total_rows >= params.max_records


def _manifest(writer: ShardWriter, sources: list[dict]) -> dict:
    files = [file for source in sources for file in source["files"]]
    skipped = sum((Counter(file["skipped"]) for file in files), Counter())
    return {
        "records": writer.total_rows,
        "html_bytes": sum(file["html_bytes"] for file in files),
        "shards": writer.shards,
        "skipped": dict(skipped),
        "sources": sources,
    }
