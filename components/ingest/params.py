"""Parameters of the crawl-ingest stage (the `crawl` section of params.yaml)."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from components.params import StrictModel


class Source(StrictModel):
    """One place to read WARC files (or saved HTML pages: .html, .htm, .xhtml, gzipped or not) from.

    `uri` is a local path, folder (its WARC and HTML files, recursively) or glob, `s3://bucket/prefix/*.warc.gz`,
    another fsspec URL (`github://org:repo@commit/folder`), `https://...`, or
    `commoncrawl://CC-MAIN-2024-22` (the crawl's warc.paths.gz is read and its first files streamed).
    `offline` is the same data as a path relative to LLM_LIFECYCLE_DATA_DIR, for machines without internet.
    """

    uri: str
    offline: str | None = None

    def for_data_dir(self, data_dir: Path | None) -> Source:
        if data_dir is None or self.offline is None:
            return self
        return Source(uri=str(data_dir / self.offline), offline=self.offline)


class S3Options(StrictModel):
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    anon: bool = Field(False, description="anonymous access (public buckets)")


class CrawlParams(StrictModel):
    sources: list[Source] = Field(min_length=1)
    max_records: int | None = Field(None, gt=0, description="stop after this many kept HTML records")
    commoncrawl_files: int = Field(1, gt=0, description="WARC files read per commoncrawl:// source")
    shard_records: int = Field(1000, gt=0, description="records per Parquet shard")
    min_html_bytes: int = Field(64, ge=0, description="smaller HTML payloads are skipped as too_small")
    max_html_bytes: int = Field(5_000_000, gt=0, description="larger HTML payloads are skipped as too_large")
    s3: S3Options = S3Options()

    def for_data_dir(self, data_dir: Path | None) -> CrawlParams:
        return self.model_copy(update={"sources": [s.for_data_dir(data_dir) for s in self.sources]})
