"""The scaling sweep's Prefect face: train an isoFLOP grid of small models with the pretraining stage's own
code on the current token shards, fit the laws, and write the recommended size into params.scaling.yaml.

Each point is a pretraining run (the pretrain params of the preset, with the size and length of the point)
whose checkpoint folder is named by the same run key as the stage's: a point already trained on the same
data, code and settings is reused, not retrained. One launch trains all the points of a budget in turn.
"""
from __future__ import annotations

import json
import math
import time

import pandas as pd
import yaml
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from components.params import StrictModel
from components.scaling import bootstrap, fit_scaling_laws, plot_isoflop, plot_power_laws, recommend
from components.scaling.sweep import matmul_params, nearest_depth, plan_sweep
from components.storage import file_md5
from components.train import TrainConfig
from components.train.launch import LaunchParams, world_size
from components.train.params import METRICS, RESULT
from components.train.report import read_rows
from tasks import tracking
from tasks.dag import StageError, Workspace
from tasks.params import SCALED_FILE
from tasks.pretrain import Params as PretrainParams
from tasks.pretrain import train_config
from tasks.training import launch_ranks


# Every point is small: one rank on this machine, whatever the preset's launcher (its batch settings still apply).
SWEEP_LAUNCH = LaunchParams(launcher="torchrun", nproc_per_node=1)


class SweepParams(StrictModel):
    """The grid. Defaults: the tiny sweep, ≈ 10 minutes on 2 CPU cores (budgets in FLOPs; depths at width
    16 x depth: 69k-475k matmul parameters at a 4096 vocabulary, whose LM head is most of them; narrow, so
    that the smallest models are near the compute-optimal size of budgets this machine can afford)."""

    budgets: list[float] = Field([3e11, 6e11, 1.2e12], min_length=2, description="compute budgets C (FLOPs)")
    depths: list[int] = Field([1, 2, 3, 4], min_length=3, description="model sizes, by the depth dial")
    aspect_ratio: int = Field(16, ge=1, description="width per layer for the sweep's models (and the recommendation)")
    head_dim: int = Field(16, ge=8)
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="each point warms up for this share of its steps")
    target_flops: float = Field(1e14, gt=0, description="the budget to recommend a size for")
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples for the uncertainty (0: none)")
    seed: int = 0


def sweep_points(sweep: SweepParams, base: PretrainParams, vocab_size: int) -> list[dict]:
    model = base.model.model_copy(update={"aspect_ratio": sweep.aspect_ratio, "head_dim": sweep.head_dim})
    tokens_per_step = base.micro_batch * base.grad_accum * base.model.seq_len  # one rank: SWEEP_LAUNCH
    return plan_sweep(sweep.budgets, sweep.depths, model, vocab_size, tokens_per_step)


def point_config(point: dict, sweep: SweepParams, base: PretrainParams, ws: Workspace) -> TrainConfig:
    """The pretraining config of one point: the preset's settings at the point's size and length."""
    params = base.model_copy(update={
        "model": base.model.model_copy(update={"depth": point["depth"], "aspect_ratio": sweep.aspect_ratio,
                                               "head_dim": sweep.head_dim}),
        "steps": point["steps"], "warmup": max(1, round(sweep.warmup_fraction * point["steps"])),
        "ckpt_every": 0, "val_every": 0, "keep_last": 1, "log_every": max(1, point["steps"] // 20),
        "launch": SWEEP_LAUNCH,
    })
    return train_config(params, ws.root / "data/tokenize", ws.root / "data/tokenizer", ws.state_dir / "scaling")


@task(task_run_name="budget {budget:.2g}")
def train_budget(budget: float, points: list[dict], sweep: SweepParams, base: PretrainParams,
                 parent_run_id: str) -> list[dict]:
    """Train the budget's points not trained before (one launch), log each as an MLflow child run."""
    ws, log = Workspace(), get_run_logger()
    configs = [point_config(p, sweep, base, ws) for p in points]
    pending = [(p, c) for p, c in zip(points, configs) if not (c.ckpt_dir / RESULT).exists()]
    log.info("budget %.2g: %d points, %d to train, %d reused", budget, len(points), len(pending),
             len(points) - len(pending))
    if pending:
        for _, cfg in pending:
            (cfg.ckpt_dir / "train_config.json").write_text(cfg.model_dump_json(indent=2))
        launch_ranks(SWEEP_LAUNCH, [cfg.ckpt_dir / "train_config.json" for _, cfg in pending])
    results = []
    for point, cfg in zip(points, configs):
        trained = any(cfg is c for _, c in pending)
        run_id = _log_point(ws, point, cfg, parent_run_id) if trained else _point_run(cfg)
        result = json.loads((cfg.ckpt_dir / RESULT).read_text())
        results.append({**point, "loss": result["val_loss"], "val_bpb": result.get("val_bpb"),
                        "run_id": run_id, "reused": not trained, "ckpt_dir": str(cfg.ckpt_dir)})
    return results


def _log_point(ws: Workspace, point: dict, cfg: TrainConfig, parent_run_id: str) -> str:
    run_id = tracking.start_run(ws.root, f"depth {point['depth']} @ {point['budget']:.2g}", {
        "kind": "scaling-point", "budget": point["budget"], "depth": point["depth"]}, parent_id=parent_run_id)
    c = tracking.client()
    for key in ("budget", "depth", "width", "params", "steps", "tokens", "flops"):
        c.log_param(run_id, key, point[key])
    handle = tracking.RunHandle(run_id)
    for row in read_rows(cfg.ckpt_dir / METRICS):
        step = row.pop("step")
        handle.log_metrics(row, step=step)
    tracking.end_run(run_id, ok=True)
    (cfg.ckpt_dir / "mlflow_run_id").write_text(run_id)
    return run_id


def _point_run(cfg: TrainConfig) -> str:
    marker = cfg.ckpt_dir / "mlflow_run_id"
    return marker.read_text().strip() if marker.exists() else ""


@task
def fit_sweep(points: list[dict], sweep: SweepParams, base: PretrainParams, preset: str, run_id: str) -> dict:
    """Fit the laws with their bootstrap, plot them, recommend a size for the target budget and write it
    to params.scaling.yaml; everything into the sweep's MLflow run and a Prefect summary."""
    ws = Workspace()
    report_dir = ws.root / "reports" / "scaling"
    report_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(points)
    table.to_csv(report_dir / "points.csv", index=False)
    tracking.client().log_artifact(run_id, str(report_dir / "points.csv"), artifact_path="reports")
    fits = fit_scaling_laws(table)  # ScalingFitError says what the sweep lacks; the points are kept
    boot = bootstrap(table, n=sweep.bootstrap, seed=sweep.seed) if sweep.bootstrap else None
    advice = recommend(fits, sweep.target_flops, boot)
    plot_isoflop(table, fits, report_dir / "isoflop.png")
    plot_power_laws(fits, report_dir / "power_laws.png", sweep.target_flops, boot)
    overlay = _recommended_overlay(advice, sweep, base, ws, run_id)
    result = {"law": fits["law"], "loss_law": fits["loss_law"], "warnings": fits["warnings"] + _doubts(advice, boot),
              "isoflop": fits["isoflop"], "bootstrap": boot and {k: boot[k] for k in ("n", "failed", "estimates")},
              "recommendation": advice, "overlay": overlay, "target_flops": sweep.target_flops}
    (report_dir / "fit.json").write_text(json.dumps(result, indent=2, default=float))
    (report_dir / "law.json").write_text(json.dumps(fits["law"], indent=2))  # `llm-lifecycle plan --law`
    _write_overlay(ws, overlay, preset, run_id)
    summary = _summary(result, table)
    (report_dir / "summary.md").write_text(summary)
    c = tracking.client()
    c.log_artifacts(run_id, str(report_dir), artifact_path="reports")
    for name, value in _flat_estimates(result).items():
        c.log_metric(run_id, name, value)
    url = tracking.run_url(run_id)
    links = f"\n\nPlots: [isoFLOP]({url}/artifactPath/reports/isoflop.png) · " \
            f"[power laws]({url}/artifactPath/reports/power_laws.png)\n" if url else ""
    create_markdown_artifact(summary + links, key="scaling-summary", description="isoFLOP sweep and fitted laws")
    return result


def _recommended_overlay(advice: dict, sweep: SweepParams, base: PretrainParams, ws: Workspace, run_id: str) -> dict:
    """The pretrain params that realise the recommendation: the nearest depth, and steps for D tokens."""
    vocab = json.loads((ws.root / "data/tokenize/manifest.json").read_text())["vocab_size"]
    model = base.model.model_copy(update={"aspect_ratio": sweep.aspect_ratio, "head_dim": sweep.head_dim})
    depth = nearest_depth(advice["params"], model, vocab)
    n = matmul_params(model.model_copy(update={"depth": depth}), vocab)
    tokens_per_step = base.micro_batch * base.grad_accum * world_size(base.launch) * base.model.seq_len
    steps = max(1, round(sweep.target_flops / (6 * n * tokens_per_step)))  # the budget at the realised size
    return {"pretrain": {"model": {"depth": depth, "aspect_ratio": sweep.aspect_ratio, "head_dim": sweep.head_dim},
                         "steps": steps, "warmup": max(1, round(sweep.warmup_fraction * steps)),
                         "scaling_run": run_id},
            "realised": {"params": n, "tokens": steps * tokens_per_step, "flops": 6 * n * steps * tokens_per_step}}


# Published compute-optimal ratios run from ~20 tokens per parameter (Hoffmann et al. 2022) to a few hundred for
# inference-heavy models: a recommendation far outside that range says more about the sweep than the law.
PLAUSIBLE_TOKENS_PER_PARAM = (1.0, 1000.0)


def _doubts(advice: dict, boot: dict | None) -> list[str]:
    """Reasons not to trust the recommendation, in words: the fit can succeed on a sweep that shows no law."""
    doubts = []
    low, high = PLAUSIBLE_TOKENS_PER_PARAM
    if not low <= advice["tokens_per_param"] <= high:
        doubts.append(f"the recommendation is {advice['tokens_per_param']:.3g} tokens per parameter, outside "
                      f"{low:g}-{high:g}: the sweep does not pin the law down; extend it before training this size")
    if boot:
        a = boot["estimates"]["a"]
        if a["high"] - a["low"] > 0.5:
            doubts.append(f"the exponent of N_opt is not determined: 90% interval [{a['low']:.3g}, {a['high']:.3g}] "
                          "(Chinchilla: ≈ 0.5); add budgets or sizes")
        if boot["failed"] > boot["n"] / 2:
            doubts.append(f"{boot['failed']} of {boot['n']} bootstrap resamples could not be fitted: too few sizes "
                          "per budget for a resample to keep 3 distinct ones")
    return doubts


def _write_overlay(ws: Workspace, overlay: dict, preset: str, run_id: str) -> None:
    header = (f"# Written by `llm-lifecycle scaling` (MLflow run {run_id}, {time.strftime('%Y-%m-%d %H:%M')}).\n"
              f"# The compute-optimal size for the sweep's target budget, over preset {preset!r}:\n"
              "# run it with `--preset scaled` (or the deployment parameter preset=scaled).\n")
    body = yaml.safe_dump({"based_on": preset, "pretrain": overlay["pretrain"]}, sort_keys=False)
    tmp = ws.root / (SCALED_FILE + ".tmp")
    tmp.write_text(header + body)
    tmp.replace(ws.root / SCALED_FILE)


def _flat_estimates(result: dict) -> dict[str, float]:
    flat = {f"law.{k}": v for k, v in result["law"].items()} | {f"loss_law.{k}": v for k, v in result["loss_law"].items()}
    flat |= {f"recommended.{k}": v for k, v in result["recommendation"].items() if isinstance(v, (int, float))}
    if result["bootstrap"]:
        flat |= {f"stderr.{k}": v["stderr"] for k, v in result["bootstrap"]["estimates"].items()
                 if math.isfinite(v["stderr"])}
    return flat


def _summary(result: dict, table: pd.DataFrame) -> str:
    lines = [f"# Scaling sweep: {len(table)} models, {table['budget'].nunique()} budgets", "",
             "| budget | depth | N | D | loss | reused |", "|---|---|---|---|---|---|"]
    for row in table.itertuples():
        lines.append(f"| {row.budget:.2g} | {row.depth} | {row.params:,} | {row.tokens:,} | {row.loss:.4f} | {row.reused} |")
    estimates = (result["bootstrap"] or {}).get("estimates", {})
    lines += ["", "| quantity | estimate | 90% interval |", "|---|---|---|"]
    for key in ("a", "b", "alpha", "beta", "E"):
        value = result["law"].get(key, result["loss_law"].get(key))
        interval = estimates.get(key)
        shown = f"[{interval['low']:.3g}, {interval['high']:.3g}]" if interval else "(no bootstrap)"
        lines.append(f"| {key} | {value:.3g} | {shown} |")
    advice, pretrain = result["recommendation"], result["overlay"]["pretrain"]
    lines += ["", f"At {result['target_flops']:.3g} FLOPs: N ≈ {advice['params']:.3g}, D ≈ {advice['tokens']:.3g} "
              f"({advice['tokens_per_param']:.1f} tokens per parameter) → depth {pretrain['model']['depth']}, "
              f"{pretrain['steps']} steps in {SCALED_FILE} (`--preset scaled`)."]
    lines += [f"\n> {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


def require_shards(ws: Workspace) -> int:
    """The vocabulary of the current token shards; a clear error when the pipeline has not made them."""
    manifest = ws.root / "data/tokenize/manifest.json"
    if not manifest.exists():
        raise StageError("the sweep trains on data/tokenize, which does not exist: run the pipeline up to "
                         "tokenize first (`llm-lifecycle run --stages ingest curate clean mix tokenizer tokenize`)")
    return json.loads(manifest.read_text())["vocab_size"]


def upstream_of(ws: Workspace, name: str) -> list[str]:
    """Every stage `name` depends on, directly or not, in DAG order: what must be current before a sweep."""
    needed, todo = set(), list(ws.stage(name).upstream)
    while todo:
        stage = todo.pop()
        if stage not in needed:
            needed.add(stage)
            todo.extend(ws.stage(stage).upstream)
    return [s.name for s in ws.stages if s.name in needed]


def open_sweep(ws: Workspace, preset: str, overrides: dict, sweep: dict, lock_wait_s: float):
    """(the workspace lock, the sweep settings, the preset's pretrain params, the sweep's MLflow run id)."""
    import mlflow

    from tasks.cancel import watch_for_cancel
    from tasks.orchestrate import acquire_workspace, prefect_tags
    from tasks.params import digest, resolve

    lock = acquire_workspace(ws, lock_wait_s)  # a pipeline run must not replace the shards under the sweep
    try:
        params = resolve(ws, preset, overrides)
        settings, base = SweepParams(**sweep), PretrainParams(**params["pretrain"])
        require_shards(ws)
        mlflow.set_tracking_uri(tracking.default_tracking_uri(ws.root))
        run_id = tracking.start_run(ws.root, f"scaling sweep {preset}", {
            "kind": "scaling", "preset": preset, "sweep": settings.model_dump_json(),
            "params_digest": digest(params["pretrain"]),
            "token_manifest_md5": file_md5(ws.root / "data/tokenize/manifest.json"), **prefect_tags()})
    except BaseException:
        lock.release()
        raise
    watch_for_cancel()
    return lock, settings, base, run_id


def close_sweep(lock, run_id: str, ok: bool) -> None:
    try:
        tracking.end_run(run_id, ok=ok)
    finally:
        lock.release()
