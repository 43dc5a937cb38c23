"""Parameters of the preferences stage (the `preferences` section of params.yaml)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.clean.dedup import DedupParams
from components.params import StrictModel
from components.sft_data.params import NAME_PATTERN, DataSource, DecontaminationParams, SftSource


class PreferenceSource(DataSource):
    """Human preference pairs in one of the formats people have (components/preferences/readers.py):

    - "hh_rlhf": Anthropic HH-RLHF, `chosen` and `rejected` full transcripts ("\\n\\nHuman: ...\\n\\nAssistant:
      ...") that share everything but the last assistant reply;
    - "pairs": the DPO format, `prompt` (a string or a list of {role, content}) with `chosen` and `rejected`
      (strings, message objects or lists of one message); or ShareGPT's `conversations` ({from, value}) as the
      prompt, as LLaMA-Factory writes it;
    - "oasst": OpenAssistant message trees: every two ranked sibling replies under one prompt path are a pair.

    `max_examples` caps the pairs read.
    """

    format: Literal["hh_rlhf", "pairs", "oasst"]
    origin: Literal["human", "arena"] = Field("human", description="who labelled the pairs")
    max_pairs_per_prompt: int | None = Field(
        None, gt=0, description="oasst: at most this many pairs from one prompt's ranked replies, the widest rank "
                                "gaps first (n ranked replies make n(n-1)/2 pairs)")


class Endpoint(StrictModel):
    """A model behind an OpenAI-compatible API (`llm-lifecycle serve`, vLLM, a hosted API)."""

    base_url: str = Field(description="ends in /v1, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="the model id the endpoint answers to (`llm-lifecycle serve` prints it: a "
                                   "local folder's absolute path)")
    api_key_env: str | None = Field(
        None, description="NAME of the environment variable that holds the API key (the key itself is never a "
                          "parameter and never written); null for a local server that checks none")
    temperature: float = Field(1.0, ge=0)
    max_tokens: int = Field(256, gt=0)
    timeout_s: float = Field(120, gt=0, description="per request")


class SimulationParams(StrictModel):
    """AlpacaFarm-style simulated pairs: the policy samples two replies per prompt, a judge picks one."""

    enabled: bool = False
    name: str = Field("simulated", pattern=NAME_PATTERN, description="the source name of the simulated pairs")
    prompts: SftSource | None = Field(
        None, description="conversations read like an sft_data source, each cut before its last reply: the prompts")
    max_prompts: int | None = Field(None, gt=0, description="sample replies for the first N prompts only")
    policy: Endpoint | None = Field(None, description="samples the two replies (temperature > 0)")
    judge: Endpoint | None = Field(None, description="picks the better reply (temperature 0 is usual)")
    agreement_pairs: int = Field(
        100, ge=0, description="the judge also labels a seeded sample of this many human pairs: its agreement with "
                               "the human label is reported with a 95% interval")
    seed: int = Field(0, description="seeds the sampling requests, the position coin and the agreement sample")
    concurrency: int = Field(4, gt=0, description="requests in flight at once")

    @field_validator("policy")
    @classmethod
    def _samples_differ(cls, policy: Endpoint | None) -> Endpoint | None:
        if policy is not None and policy.temperature <= 0:
            raise ValueError("the policy's temperature must be > 0: greedy decoding samples the same reply twice")
        return policy

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> SimulationParams:
        missing = [name for name in ("prompts", "policy", "judge") if getattr(self, name) is None]
        if self.enabled and missing:
            raise ValueError(f"simulation is enabled but has no {', '.join(missing)}")
        return self


class PreferencesParams(StrictModel):
    sources: list[PreferenceSource] = Field(min_length=1)
    simulation: SimulationParams = SimulationParams()
    on_bad_record: Literal["error", "count"] = Field(
        "error", description="a malformed record (bad JSON line, empty reply, chosen equal to rejected, prompts that "
                             "differ, ...): 'error' stops the stage naming the file and line; 'count' drops it and "
                             "reports it. A file that is not JSON at all always stops the stage")
    dedup: DedupParams = Field(
        DedupParams(near=False), description="over each pair's prompt and both replies; near duplicates are off by "
                                             "default: pairs that share a long prompt differ only in short replies")
    decontamination: DecontaminationParams = DecontaminationParams()
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of prompts (seeded hash of the prompt) in val")
    seed: int = 1
    tokenizer: str | None = Field(
        None, description="a Hugging Face tokenizer or model folder (the model the pairs train); null: the "
                          "pipeline's tokenizer stage output, data/tokenizer")
    max_seq_len: int = Field(1024, gt=0, description="pairs with a longer side (chat template and EOS included) "
                                                     "are dropped")

    @model_validator(mode="after")
    def _unique_names(self) -> PreferencesParams:
        names = [source.name for source in self.sources] + [self.simulation.name] * self.simulation.enabled
        if len(set(names)) != len(names):
            raise ValueError(f"source names (and the simulated pairs' name) must be unique: they prefix pair ids: "
                             f"{names}")
        return self

    def for_data_dir(self, data_dir: Path | None) -> PreferencesParams:
        eval_sets = [s.for_data_dir(data_dir) for s in self.decontamination.eval_sets]
        prompts = self.simulation.prompts
        return self.model_copy(update={
            "sources": [s.for_data_dir(data_dir) for s in self.sources],
            "decontamination": self.decontamination.model_copy(update={"eval_sets": eval_sets}),
            "simulation": self.simulation.model_copy(update={"prompts": prompts and prompts.for_data_dir(data_dir)})})
