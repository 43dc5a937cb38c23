"""The report card: every evaluated model's scores side by side, HELM-style (components/evaluate `report_card`: one
table of models x measures with 95% intervals, chance lines and digests, a CSV with every field, and plots).

It reads data/evaluate, which holds one folder per evaluate item; items whose model is disabled in the parameters
are left out (a stale folder of theirs too). It publishes data/report (`scores.parquet`, gated by `eval_scores`
like each model's, `report.md`, `report.csv`, the plots); the card also goes to reports/report/, so the run's
MLflow artifacts hold it and the Prefect pipeline summary links it. Once published, the table is logged as an
MLflow table (`report_card.json`), and each model's headline scores become tags `llm.score.<task/.../measure>` of
the registered model version that was scored, so the registry shows what each version scores.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from pydantic import Field

from components.evaluate import report_card
from components.params import StrictModel
from tasks import tracking
from tasks.evaluate import headline, model_read

SECTION = "report"
GATES = {"scores.parquet": "eval_scores"}
__all__ = ["GATES", "Params", "SECTION", "published", "run", "scored_version"]


class Params(StrictModel):
    tag_registry: bool = Field(True, description="put each model's headline scores on the registered model version "
                                                 "that was scored (tags llm.score.*)")
    arena_votes: Path | None = Field(Path(".llm-lifecycle/arena/votes.db"), description="the arena's vote database "
                                     "(`llm-lifecycle arena`'s default, relative to the workspace): when it holds votes "
                                     "for the scored model versions, the card gets an arena column (Elo-scale "
                                     "Bradley-Terry). Votes are no DVC input: force the report stage to refresh it")


def run(ctx, progress: bool = True) -> dict[str, float]:
    scores = pd.concat([pd.read_parquet(folder / "scores.parquet") for folder in ctx.inputs.values()]
                       + [pd.DataFrame(_arena_rows(ctx.params.arena_votes, list(ctx.inputs)))], ignore_index=True)
    scores.to_parquet(ctx.out_dir / "scores.parquet", index=False)
    for path in report_card(scores.to_dict("records"), ctx.out_dir).values():
        shutil.copy(path, ctx.report_dir / path.name)
    return {**_side_by_side(scores), "models": scores["model"].nunique(), "scores": len(scores)}


def _arena_rows(votes_file: Path | None, evaluations: list[str]) -> list[dict]:
    """The arena's leaderboard for the model versions this report scored, as report-card rows."""
    from tasks.dag import Workspace

    ws = Workspace()
    if votes_file is None or not (ws.root / votes_file).exists():
        return []
    from components.arena import VoteStore, sqlite_url
    from components.arena.ranking import score_rows

    store = VoteStore(sqlite_url(ws.root / votes_file))
    try:
        votes = store.battles()
    finally:
        store.close()
    versions = {scored_version(ws, evaluation): ws.stage(evaluation).item for evaluation in evaluations}
    return score_rows(votes, {v: model for v, model in versions.items() if v}) if len(votes) else []


def _side_by_side(scores: pd.DataFrame) -> dict[str, float]:
    """`model/headline key`, the models next to each other for each key (the run summary shows the first few)."""
    by_model = {model: headline(rows) for model, rows in scores.groupby("model", sort=False)}
    keys = dict.fromkeys(key for numbers in by_model.values() for key in numbers)
    return {f"{model}/{key}": numbers[key] for key in keys for model, numbers in by_model.items() if key in numbers}


def published(ctx, stage_run) -> None:
    """The table into the stage's MLflow run; each model's headline scores onto its registered version."""
    if not stage_run.run_id:  # not tracked: no run and no registry to write to
        return
    from tasks.dag import Workspace

    scores = pd.read_parquet(ctx.out_dir / "scores.parquet")
    tracking.client().log_table(stage_run.run_id, scores, "report_card.json")
    if not ctx.params.tag_registry:
        return
    ws = Workspace()
    for evaluation, folder in ctx.inputs.items():
        version = scored_version(ws, evaluation)
        if version is None:  # a model from outside the pipeline (a hub id) or from an untracked run
            print(f"{evaluation}: no registered model version found for what it scored; no tags", flush=True)
            continue
        name, _, number = version.rpartition("/")
        numbers = headline(pd.read_parquet(folder / "scores.parquet"))
        for key, value in {**{f"score.{k}": f"{v:.4g}" for k, v in numbers.items()},
                           "scored_by": stage_run.run_id}.items():
            tracking.client().set_model_version_tag(name, number, f"{tracking.TAG}{key}", value)
        print(f"tagged {version} with {len(numbers)} scores of {evaluation}", flush=True)


def scored_version(ws, evaluation: str) -> str | None:
    """`NAME/VERSION` of the registered model that evaluate item `evaluation` scored: the version the stage run that
    produced its model folder registered, at the md5 the item's dvc.lock entry read (as tasks/training.upstream_model
    finds the version a fine-tuning stage started from)."""
    from tasks.lineage import producer

    read = model_read(ws.stage(evaluation))
    md5 = next((dep["md5"] for dep in ws.lock_entry(evaluation).get("deps", []) if dep["path"] == read.folder), None)
    run_id = producer(read.folder, md5) if md5 else None
    return tracking.client().get_run(run_id).data.tags.get(f"{tracking.TAG}registered_model") if run_id else None
