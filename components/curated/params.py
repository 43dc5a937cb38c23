"""Parameters of the curated-text sources (the `curated` section of params.yaml)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.clean.domain import DOMAINS
from components.curated.readers import SPLITTABLE_FORMATS
from components.ingest.params import Source
from components.params import StrictModel

Format = Literal["gutenberg", "wikitext", "lines", "jsonl", "zip_txt", "text"]


class CuratedSource(Source):
    """One collection of high-quality text; `uri` may be a glob (local or s3://) matching several files.

    Formats: "gutenberg" (Project Gutenberg .txt, license header/footer stripped), "wikitext" (tokenized
    WikiText, one document per article), "lines" (one document per non-empty line), "jsonl" (a "text" field
    per line), "zip_txt" (one document per .txt inside each zip), "text" (each file is one document).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="document ids are '<name>/<n>'")
    format: Format
    domain: str | None = Field(
        description="one of components.clean.domain.DOMAINS, or null for mixed web text the domain step classifies"
    )
    max_docs: int | None = Field(None, gt=0)
    split_chars: int | None = Field(
        None, gt=0, description="gutenberg/text: cut long files into ~N-char chunks at paragraph boundaries"
    )

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, domain: str | None) -> str | None:
        if domain is not None and domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; allowed: {', '.join(DOMAINS)}")
        return domain

    @model_validator(mode="after")
    def _split_only_whole_files(self) -> CuratedSource:
        if self.split_chars is not None and self.format not in SPLITTABLE_FORMATS:
            raise ValueError(f"split_chars applies to formats {sorted(SPLITTABLE_FORMATS)}, not {self.format!r}")
        return self

    def for_data_dir(self, data_dir: Path | None) -> CuratedSource:
        if data_dir is None or self.offline is None:
            return self
        return self.model_copy(update={"uri": str(Path(data_dir) / self.offline)})


class CuratedParams(StrictModel):
    sources: list[CuratedSource] = Field(min_length=1)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[CuratedSource]) -> list[CuratedSource]:
        names = [source.name for source in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique (they prefix document ids): {names}")
        return sources

    def for_data_dir(self, data_dir: Path | None) -> CuratedParams:
        return self.model_copy(update={"sources": [s.for_data_dir(data_dir) for s in self.sources]})
