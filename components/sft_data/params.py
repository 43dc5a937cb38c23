"""Parameters of the SFT data stage (the `sft_data` section of params.yaml)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from components.clean.dedup import DedupParams
from components.ingest.params import Source
from components.params import StrictModel

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
SYNTHETIC_SOURCE = "self_instruct"  # the source name of the generated examples
ALPACA = "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/761dc5bfbdeeffa89b8bff5d038781a4055f796a"


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


class SyntheticParams(StrictModel):
    """Instructions a teacher model writes by Alpaca's self-instruct recipe (components/sft_data/selfinstruct.py),
    read as one more alpaca-format source named `self_instruct`. Relative paths are relative to the workspace root,
    where stages run."""

    enabled: bool = False
    base_url: str | None = Field(None, description="the teacher's OpenAI-compatible endpoint, ending in /v1")
    model: str | None = Field(None, description="the model id the endpoint answers to")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding the API key (the key itself is never a parameter "
                    "and never written); null for a local server that checks none")
    seed_tasks: Source = Source(uri=f"{ALPACA}/seed_tasks.jsonl", offline="sft/stanford_alpaca/seed_tasks.jsonl")
    prompt: Source = Source(uri=f"{ALPACA}/prompt.txt", offline="sft/stanford_alpaca/prompt.txt")
    num_instructions: int = Field(100, gt=0, description="stop once this many generated tasks are accepted")
    max_requests: int | None = Field(
        None, gt=0, description="stop after this many requests even if fewer were accepted (a teacher that writes "
                                "junk must not spend without bound); null: num_instructions")
    request_batch: int = Field(20, gt=1, description="tasks in the list the teacher is asked for, the "
                                                     "demonstrations included (Alpaca: 20)")
    seed_demonstrations: int = Field(3, gt=0, description="seed tasks shown per request (Alpaca: 3)")
    concurrency: int = Field(4, gt=0, description="requests in flight at once (the requests do not depend on "
                                                  "each other's replies: same output whatever this is)")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(3072, gt=0, description="per reply (Alpaca: 3072)")
    rouge_l_max: float = Field(0.7, ge=0, le=1, description="a task whose instruction has a ROUGE-L F above this "
                                                           "with any instruction in the pool is dropped")
    seed: int = Field(0, description="seeds the demonstrations drawn and each request's sampling")
    price_per_1k_input_tokens: float | None = Field(None, ge=0, description="USD, for the cost line")
    price_per_1k_output_tokens: float | None = Field(None, ge=0, description="USD, for the cost line")
    cache_dir: str = Field(".llm-lifecycle/sft_data/teacher-cache",
                           description="one file per teacher request, named by its sha256: a rerun pays nothing")

    @model_validator(mode="after")
    def _usable(self) -> SyntheticParams:
        missing = [name for name in ("base_url", "model") if getattr(self, name) is None]
        if self.enabled and missing:
            raise ValueError(f"synthetic data is enabled but has no {' and '.join(missing)} (the teacher)")
        if (self.price_per_1k_input_tokens is None) != (self.price_per_1k_output_tokens is None):
            raise ValueError("give both prices (input and output tokens) for a cost, or neither")
        if self.seed_demonstrations >= self.request_batch - 1:
            raise ValueError(f"request_batch {self.request_batch} leaves no room for a new task after "
                             f"{self.seed_demonstrations} demonstrations")
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
    synthetic: SyntheticParams = SyntheticParams()

    @model_validator(mode="after")
    def _unique_names(self) -> SftDataParams:
        names = [source.name for source in self.sources] + [SYNTHETIC_SOURCE] * self.synthetic.enabled
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique (they prefix example ids; {SYNTHETIC_SOURCE} is the "
                             f"synthetic data's): {names}")
        return self

    def for_data_dir(self, data_dir: Path | None) -> SftDataParams:
        eval_sets = [s.for_data_dir(data_dir) for s in self.decontamination.eval_sets]
        synthetic = self.synthetic.model_copy(update={"seed_tasks": self.synthetic.seed_tasks.for_data_dir(data_dir),
                                                      "prompt": self.synthetic.prompt.for_data_dir(data_dir)})
        return self.model_copy(update={
            "sources": [s.for_data_dir(data_dir) for s in self.sources],
            "decontamination": self.decontamination.model_copy(update={"eval_sets": eval_sets}),
            "synthetic": synthetic})
