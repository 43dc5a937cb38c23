"""Evaluation of each model the pipeline makes: one stage per model, from dvc.yaml's `foreach` (`evaluate@base`
reads data/pretrain, `evaluate@sft` data/sft, ...), so a new model adds a stage and an unchanged model is skipped.

Each item scores its model with components/evaluate and the `evaluate` params section: bits per byte and
perplexity on held-out text (refused if any of its documents is in the pretraining mix, data/mix), multiple choice
in both formulations with intervals, chance lines and digests, Oren et al.'s contamination test, and the judged
win rate when a judge endpoint is configured. It publishes the score rows (`scores.parquet`, gated by
`eval_scores`); the model's own report card goes to its reports (reports/evaluate/<model>/). Which model version was
scored is what dvc.lock records for the item's dependency data/<model stage>: the report stage finds the registered
version from it.

Only causal language models are evaluated this way: the reward model has no next-token probabilities (its stage
reports its held-out pairwise accuracy instead), and an item that names one fails with that message.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from components.evaluate import EvalParams as Params
from components.tokenizer.roundtrip import mix_texts
from tasks.dag import Input, StageError, StageSpec

SECTION = "evaluate"
GATES = {"scores.parquet": "eval_scores"}
MIX = "mix"  # the upstream every item reads besides its model: the documents held-out text must not be in
# The numbers a model is known by (stage metrics, registry tags): cloze acc_norm (length-normalised, unlike cloze
# acc) and letter acc, bits per byte, the judged win rates, the contamination p-values; on all items.
HEADLINE = {"cloze": ["acc_norm"], "letter": ["acc"], "": ["bpb", "win_rate", "lc_win_rate", "contamination_p"]}
__all__ = ["GATES", "HEADLINE", "MIX", "Params", "SECTION", "headline", "model_read", "require_causal_lm", "run",
           "score_model"]


def run(ctx, progress: bool = True) -> dict[str, float]:
    from components.evaluate import report_card

    model = ctx.inputs[model_read(ctx.spec).stage]
    rows = score_model(model, ctx.params, ctx.spec.item, ctx.inputs[MIX])
    scores = pd.DataFrame(rows)
    scores.to_parquet(ctx.out_dir / "scores.parquet", index=False)
    report_card(rows, ctx.report_dir)  # this model's card; the report stage puts every model's side by side
    return {**headline(scores), "scores": len(rows)}


def model_read(spec: StageSpec) -> Input:
    """The model an evaluate item scores: dvc.yaml gives each item data/<model stage> and data/mix."""
    models = [read for read in spec.reads if read.stage != MIX]
    if len(models) != 1:
        raise StageError(f"{spec.name} must read one model folder besides data/{MIX}; it reads "
                         f"{[read.folder for read in models] or 'none'}: give it one `data/<model stage>` in dvc.yaml")
    return models[0]


def score_model(model: str | Path, params: Params, name: str, mix: Path | None) -> list[dict]:
    """Every score row of `model` (an HF folder or hub id); with `mix`, text sets holding a mix document are
    refused."""
    from components.evaluate import evaluate_model

    require_causal_lm(model)
    return evaluate_model(model, params, name, _mix_documents(mix) if mix else None)


def _mix_documents(mix: Path) -> Callable[[], Iterable[str]]:
    shards = sorted(mix.glob("pretrain-*.parquet")) + sorted(mix.glob("anneal-*.parquet"))
    return lambda: (text for _, text in mix_texts(shards, None))


def require_causal_lm(model: str | Path) -> None:
    """Refuse what has no next-token probabilities: a classifier head loaded as a causal LM would get a random
    LM head and score silently at chance."""
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(model).architectures or []
    if not any(name.endswith("ForCausalLM") for name in architectures):
        raise StageError(f"{model} is {', '.join(architectures) or 'a model without architectures'}, not a causal "
                         "language model: bits per byte and multiple choice score next-token probabilities (a "
                         "reward model is judged by its own stage's held-out pairwise accuracy)")


def headline(scores: pd.DataFrame) -> dict[str, float]:
    """{`task/formulation/k-shot/measure`: value} of the headline rows, in the order of the rows."""
    keep = [subset == "all" and measure in HEADLINE.get(formulation, [])
            for measure, formulation, subset in zip(scores["measure"], scores["formulation"], scores["subset"])]
    return {_key(row): float(row.value) for row in scores[keep].itertuples()}


def _key(row) -> str:
    shots = "" if pd.isna(row.shots) else f"{int(row.shots)}-shot"
    parts = (re.sub(r"[^\w.-]+", "_", row.task), row.formulation, shots, row.measure)  # MLflow's allowed characters
    return "/".join(part for part in parts if part)
