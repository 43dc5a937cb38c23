"""Parameters of the SFT data stage (the `sft_data` section of params.yaml)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.clean.dedup import DedupParams
from components.ingest.params import Source
from components.params import StrictModel

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class NamedSource(Source):
    """A named file set: `uri` (a local path or glob, s3://, https://) and its `offline` copy under
    LLM_LIFECYCLE_DATA_DIR, as for the crawl and curated sources."""

    name: str = Field(pattern=NAME_PATTERN)

    def for_data_dir(self, data_dir: Path | None) -> NamedSource:
        # a copy, not Source.for_data_dir, which builds a bare Source and would drop the subclass's fields
        if data_dir is None or self.offline is None:
            return self
        return self.model_copy(update={"uri": str(Path(data_dir) / self.offline)})


class DataSource(NamedSource):
    """A named file set of training data, of which at most `max_examples` items are read."""

    max_examples: int | None = Field(None, gt=0, description="read at most this many examples from the source")


class SftSource(DataSource):
    """Instruction data in one of the formats people have (components/sft_data/readers.py):

    - "alpaca": records with `instruction`, optional `input` (appended after a blank line) and `output`; or,
      self-instruct style, `instruction` with `instances: [{input, output}]` (one example per instance);
    - "messages": `{"messages": [{"role", "content"}]}` (OpenAI) or `{"conversations": [{"from", "value"}]}`
      (ShareGPT: human, gpt, system), multi-turn, an optional system turn first;
    - "oasst": OpenAssistant message trees, one conversation per tree along the best-ranked replies.

    Files are a JSON array or JSON Lines, whatever their suffix; .gz/.bz2/... are decompressed by name.
    """

    format: Literal["alpaca", "messages", "oasst"]


class EvalSet(NamedSource):
    """An evaluation set to keep out of the training data. Each item's text is its `fields` joined by spaces
    (a list-valued field, e.g. multiple-choice options, contributes all its strings).

    Formats: "json" (a JSON array of objects, or JSON Lines), "csv" (with a header; the delimiter is the
    header's), "hellaswag" (the plain-text layout of six lines per item: "activity: context", the label, four
    endings; fields `ctx` and `endings`).
    """

    format: Literal["json", "csv", "hellaswag"]
    fields: list[str] = Field(min_length=1)


class DecontaminationParams(StrictModel):
    """GPT-3-style n-gram decontamination (components/sft_data/decontaminate.py explains the method)."""

    eval_sets: list[EvalSet] = Field(default_factory=list)
    min_n: int = Field(8, ge=1, description="n-gram size floor (GPT-3 appendix C: 8)")
    max_n: int = Field(13, ge=1, description="n-gram size cap (GPT-3 appendix C: 13)")
    length_percentile: float = Field(5, ge=0, le=100, description="n = this percentile of an eval set's item "
                                                                   "lengths in words, clamped to [min_n, max_n]")
    min_item_words: int = Field(
        4, ge=1, description="eval items shorter than this (AlpacaEval's 'Write \"Test\"') are not matched: "
                             "as whole sequences they would match common phrases in unrelated examples")

    @model_validator(mode="after")
    def _range(self) -> DecontaminationParams:
        if self.min_n > self.max_n:
            raise ValueError(f"min_n {self.min_n} exceeds max_n {self.max_n}")
        names = [s.name for s in self.eval_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"eval set names must be unique (the report names them): {names}")
        return self


class SftDataParams(StrictModel):
    sources: list[SftSource] = Field(min_length=1)
    on_bad_record: Literal["error", "count"] = Field(
        "error", description="a malformed record (bad JSON line, unknown role, missing field, ...): 'error' stops "
                             "the stage naming the file and line; 'count' drops it and reports it. A file that is "
                             "not JSON at all always stops the stage")
    dedup: DedupParams = DedupParams()
    decontamination: DecontaminationParams = DecontaminationParams()
    val_fraction: float = Field(0.05, ge=0, lt=1, description="share of examples (seeded hash of the id) in val")
    seed: int = 1
    tokenizer: str | None = Field(
        None, description="a Hugging Face tokenizer or model folder (the model SFT fine-tunes); null: the "
                          "pipeline's tokenizer stage output, data/tokenizer")
    max_seq_len: int = Field(1024, gt=0, description="longer examples (chat template and EOS included) are dropped")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SftSource]) -> list[SftSource]:
        names = [source.name for source in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique (they prefix example ids): {names}")
        return sources

    def for_data_dir(self, data_dir: Path | None) -> SftDataParams:
        eval_sets = [s.for_data_dir(data_dir) for s in self.decontamination.eval_sets]
        return self.model_copy(update={
            "sources": [s.for_data_dir(data_dir) for s in self.sources],
            "decontamination": self.decontamination.model_copy(update={"eval_sets": eval_sets})})
