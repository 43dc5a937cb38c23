"""Parameters of the evaluation: held-out text sets, multiple-choice tasks, the judge, the contamination test."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.curated.params import CuratedSource
from components.params import StrictModel

TaskName = Literal["mmlu_redux", "arc_easy", "arc_challenge", "piqa", "winogrande", "openbook_qa", "copa",
                   "commonsense_qa", "boolq", "hellaswag"]
Formulation = Literal["cloze", "letter"]


class LocalFile(StrictModel):
    """A file or glob; `offline` is the same data relative to LLM_LIFECYCLE_DATA_DIR."""

    uri: str
    offline: str | None = None

    def for_data_dir(self, data_dir: Path | None):
        if data_dir is None or self.offline is None:
            return self
        return self.model_copy(update={"uri": str(Path(data_dir) / self.offline)})


class TaskSpec(LocalFile):
    """One multiple-choice task: which reader and prompts (`task`), which files, how it is asked."""

    task: TaskName = Field(description="the reader and prompt templates (components/evaluate/tasks.py)")
    formulations: list[Formulation] = Field(
        ["cloze", "letter"], min_length=1,
        description="cloze: log-likelihood of each answer's text (acc, acc_norm); letter: options listed A./B./..., "
                    "log-likelihood of ' A', ' B', ... (acc). OLMES reports both")
    shots: list[int] = Field([0], min_length=1, description="few-shot counts, each scored separately")
    fewshot_pool: int = Field(
        5, ge=0, description="the first N items of each group (an MMLU subject, else the file) are the few-shot "
                             "examples and are never scored, for any shot count: 0-shot and k-shot score the same "
                             "items. Must be at least the largest shot count")
    max_items: int | None = Field(None, gt=0, description="score a seeded sample of this many items (tiny preset)")
    seed: int = 0

    @field_validator("shots")
    @classmethod
    def _non_negative(cls, shots: list[int]) -> list[int]:
        if min(shots) < 0:
            raise ValueError(f"shot counts must be >= 0, got {shots}")
        return shots

    @model_validator(mode="after")
    def _pool_holds_the_shots(self) -> TaskSpec:
        if max(self.shots) > self.fewshot_pool:
            raise ValueError(f"{self.task}: {max(self.shots)} shots need fewshot_pool >= {max(self.shots)}, "
                             f"got {self.fewshot_pool}")
        return self


class JudgeParams(StrictModel):
    """AlpacaEval-style pairwise judging behind an OpenAI-compatible endpoint."""

    reference: LocalFile = Field(description="the reference model's outputs (AlpacaEval model_outputs.json: "
                                             "instruction, output, generator); its instructions are the ones asked")
    max_items: int | None = Field(None, gt=0, description="the first N instructions only (tiny preset)")
    base_url: str = Field(description="the judge's OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="the judge model's name at that endpoint")
    api_key_env: str | None = Field(
        None, description="NAME of the environment variable holding the judge's API key (the key itself is never "
                          "a parameter and never written); null for a local server that needs none")
    cache_dir: str = Field(".llm-lifecycle/judge-cache", description="one file per judge request digest")
    seed: int = Field(0, description="seeds the per-instruction coin that decides which answer is shown first")
    max_new_tokens: int = Field(256, gt=0, description="the evaluated model's answer length cap")
    gamed_table: LocalFile | None = Field(
        None, description="AlpacaEval's df_gamed.csv (instruction difficulty + gamed-baseline annotations; the "
                          "package downloads it from the Hugging Face hub). Given: the length-controlled win rate "
                          "is the package's length_controlled_v1 GLM; absent: its length_controlled_minimal GLM")


class ContaminationParams(StrictModel):
    """Oren et al. 2023's sharded exchangeability test, and n-gram overlap with training documents."""

    shards: int = Field(8, ge=2, description="the canonical order is split into this many contiguous shards")
    permutations: int = Field(10, ge=1, description="shuffled orders scored per shard")
    max_items: int | None = Field(64, gt=0, description="the first N items of each task in their file order")
    tasks: list[TaskName] | None = Field(None, description="the tasks tested; null: every task in `tasks`")
    ngram: int = Field(13, ge=1, description="word n-gram length of the overlap (GPT-3's 13)")
    seed: int = 0


class EvalParams(StrictModel):
    text_sets: list[CuratedSource] = Field(
        [], description="held-out text for bits per byte / perplexity, read exactly as the curate stage reads a "
                        "source (so its documents can be checked against the mix's)")
    window_stride: float = Field(
        0.5, gt=0, le=1, description="sliding windows over long documents advance by this fraction of the model's "
                                     "context; every token after the first window keeps at least (1-stride) of it")
    tasks: list[TaskSpec] = []
    batch_tokens: int = Field(16384, ge=256, description="tokens per forward pass (padding included)")
    batching: Literal["shared_context", "padded"] = Field(
        "shared_context", description="shared_context: each distinct context runs once and its KV cache serves "
                                      "every continuation; padded: every (context, continuation) is its own row")
    judge: JudgeParams | None = None
    contamination: ContaminationParams | None = ContaminationParams()

    @model_validator(mode="after")
    def _contamination_tasks_are_evaluated(self) -> EvalParams:
        named = set(self.contamination.tasks or []) if self.contamination else set()
        unknown = sorted(named - {spec.task for spec in self.tasks})
        if unknown:
            raise ValueError(f"contamination.tasks {unknown} are not among the evaluated tasks")
        return self

    def for_data_dir(self, data_dir: Path | None) -> EvalParams:
        judge = self.judge
        if judge is not None:
            judge = judge.model_copy(update={
                "reference": judge.reference.for_data_dir(data_dir),
                "gamed_table": judge.gamed_table and judge.gamed_table.for_data_dir(data_dir)})
        return self.model_copy(update={"text_sets": [s.for_data_dir(data_dir) for s in self.text_sets],
                                       "tasks": [t.for_data_dir(data_dir) for t in self.tasks], "judge": judge})
