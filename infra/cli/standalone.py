"""A stage's science outside the DAG (ingest, clean, evaluate) and the planning tools (preflight, plan)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from infra.cli.common import ModelSpec, Sets, app, fail


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="local paths/globs, s3://, https://, commoncrawl://ID")],
    out: Annotated[Path, typer.Option(help="output folder")],
    max_records: Annotated[Optional[int], typer.Option(help="stop after this many HTML records")] = None,
) -> None:
    """Ingest WARC files into Parquet shards, outside the DAG."""
    from components.ingest import CrawlParams, Source, ingest as ingest_warcs
    from components.storage import staged_dir

    params = CrawlParams(sources=[Source(uri=s) for s in sources], max_records=max_records)
    with staged_dir(out) as staging:
        manifest = ingest_warcs(params, staging)
    typer.echo(f"{manifest['records']} records in {len(manifest['shards'])} shards → {out}; "
               f"skipped: {json.dumps(manifest['skipped'], sort_keys=True)}")


@app.command()
def clean(
    records: Annotated[Path, typer.Option("--in", help="ingest output: records-*.parquet")],
    out: Annotated[Path, typer.Option(help="output folder")],
    curated: Annotated[Path | None, typer.Option(help="curate output: the quality classifier's positives")] = None,
    quality_model: Annotated[Path | None, typer.Option(
        help="without --curated: a previous run's quality_model.safetensors to score with")] = None,
    preset: Annotated[str, typer.Option(help="preset from params.yaml")] = "tiny",
    set_: Sets = None,
) -> None:
    """Clean crawl records outside the DAG, with the clean section of params.yaml (--set clean.KEY=VALUE).
    Without --curated (a crawl of your own) every other step runs, and the quality step is skipped unless
    --quality-model gives a classifier from a previous run."""
    from components.clean.params import CleanParams
    from components.clean.pipeline import clean as clean_records
    from components.storage import staged_dir
    from tasks.dag import Workspace
    from tasks.params import ParamsError, parse_overrides, resolve

    try:
        params = CleanParams.model_validate(resolve(Workspace(), preset, parse_overrides(set_ or []))["clean"])
    except ParamsError as err:
        fail(str(err))
    with staged_dir(out) as staging:
        summary = clean_records(params, records, curated, staging, quality_model=quality_model)
    kept = {step: s["docs_out"] for step, s in summary["steps"].items()}
    typer.echo(f"{summary['documents']} documents → {out}; after each step: {json.dumps(kept)}")
    if "skipped" in summary["quality_model"]:
        typer.echo(f"quality classifier skipped: {summary['quality_model']['skipped']} (pass --curated DIR or "
                   "--quality-model FILE)")


@app.command()
def evaluate(
    models: Annotated[list[str], typer.Argument(help=ModelSpec)],
    out: Annotated[Path, typer.Option(help="folder for the report card, scores.parquet, plots")] = Path("evaluation"),
    preset: Annotated[str, typer.Option(help="preset from params.yaml")] = "tiny",
    set_: Sets = None,
) -> None:
    """Score models outside the DAG, as the evaluate stages do, with the evaluate section of params.yaml (--set
    evaluate.KEY=VALUE), side by side in one report card. Text sets holding a document of this workspace's
    data/mix (when it exists) are refused. Causal language models only."""
    import pandas as pd

    from components.evaluate import EvalParams, EvalTextInTraining, report_card
    from components.storage import staged_dir
    from infra import serve
    from tasks.dag import StageError, Workspace
    from tasks.evaluate import score_model
    from tasks.params import ParamsError, parse_overrides, resolve

    ws = Workspace()
    mix = ws.root / ws.stage("mix").data_out
    try:
        params = EvalParams.model_validate(resolve(ws, preset, parse_overrides(set_ or []))["evaluate"])
        rows = [row for spec in models for row in score_model(serve.resolve(spec, ws).source, params, spec,
                                                              mix if mix.is_dir() else None)]
    except (ParamsError, serve.ServeError, StageError, EvalTextInTraining) as err:
        fail(str(err))
    with staged_dir(out) as staging:
        report_card(rows, staging)
        pd.DataFrame(rows).to_parquet(staging / "scores.parquet", index=False)
    typer.echo((out / "report.md").read_text() + f"\n{len(rows)} scores of {len(models)} model(s) → {out}/")


@app.command()
def preflight(
    preset: Annotated[Optional[str], typer.Option(help="take the launch settings from this preset's pretrain section")] = None,
    set_: Sets = None,
    ckpt_dir: Annotated[Optional[Path], typer.Option(help="checkpoint folder to check [.llm-lifecycle/pretrain]")] = None,
    min_disk_gb: Annotated[float, typer.Option(help="free disk needed for checkpoints")] = 10.0,
    min_gpu_gb: Annotated[float, typer.Option(help="free memory needed on every GPU")] = 0.0,
    timeout: Annotated[float, typer.Option(help="seconds the ranks get to meet and all-reduce")] = 180.0,
    bandwidth_params: Annotated[Optional[int], typer.Option(help="fp32 values in the timed all-reduce [2**26 on GPUs, 2**22 on CPU]")] = None,
    min_bus_gbps: Annotated[Optional[float], typer.Option(help="flag a bus bandwidth below this [GPUs: 100 on one node, 20 across nodes]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Before a multi-node job: hosts reachable, same code everywhere, an all-reduce across every rank and its
    bandwidth, GPUs, GPU memory and checkpoint disk. Uses the pretrain section's `launch` settings (`--set
    pretrain.launch.nproc_per_node=2`, `--set pretrain.launch.hostfile=...`); torchrun on several nodes
    (`pretrain.launch.nnodes`): run it on every node."""
    from components.train.launch import LaunchParams
    from components.train.preflight import check
    from tasks.dag import Workspace
    from tasks.params import ParamsError, parse_overrides, resolve

    ws = Workspace()
    try:
        launch = LaunchParams(**resolve(ws, preset, parse_overrides(set_ or []))["pretrain"]["launch"])
    except ParamsError as err:
        fail(str(err))
    report = check(launch, ckpt_dir or ws.state_dir / "pretrain", min_disk_gb, min_gpu_gb, timeout,
                   bandwidth_params, min_bus_gbps)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for facts in report["ranks"]:
            gpu = f", {facts['free_gpu_gb']:.0f} GB GPU free" if facts["free_gpu_gb"] is not None else ""
            bus = f", all-reduce {facts['bus_gbps']:.1f} GB/s bus" if facts.get("bus_gbps") is not None else ""
            typer.echo(f"rank {facts['rank']} on {facts['host']}: code {facts['code']}, "
                       f"{facts['free_disk_gb']:.0f} GB disk free{gpu}{bus}")
        for problem in report["problems"]:
            typer.secho(f"problem: {problem}", fg="red", err=True)
        if report["ok"]:
            typer.echo(f"preflight passed: {report['world']} ranks met and all-reduced")
    raise typer.Exit(0 if report["ok"] else 1)


@app.command("plan")
def plan_compute(
    params: Annotated[Optional[float], typer.Option(help="model parameters N, e.g. 405e9")] = None,
    tokens: Annotated[Optional[float], typer.Option(help="training tokens D, e.g. 15.6e12")] = None,
    flops: Annotated[Optional[float], typer.Option(help="FLOP budget C; alone, it is split compute-optimally")] = None,
    layers: Annotated[Optional[int], typer.Option(help="with --d-model --seq-len: add the attention FLOPs")] = None,
    d_model: Annotated[Optional[int], typer.Option(help="model width, for the attention term")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="context length, for the attention term")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="h100, h200 or a100 (bf16 dense peak)")] = None,
    gpus: Annotated[Optional[float], typer.Option(help="GPUs training in parallel [1024]")] = None,
    peak_tflops: Annotated[Optional[float], typer.Option(help="override the GPU's peak TFLOP/s")] = None,
    mfu: Annotated[Optional[float], typer.Option(help="model FLOPs utilisation [0.4]")] = None,
    achieved_tflops: Annotated[Optional[float], typer.Option(help="achieved TFLOP/s per GPU (instead of --mfu)")] = None,
    usd_per_gpu_hour: Annotated[Optional[float], typer.Option(help="price of one GPU-hour [2]")] = None,
    watts_per_gpu: Annotated[Optional[float], typer.Option(help="GPU power [700 H100/H200, 400 A100]")] = None,
    pue: Annotated[Optional[float], typer.Option(help="datacentre power usage effectiveness [1.2]")] = None,
    grid_kgco2e_per_kwh: Annotated[Optional[float], typer.Option(help="grid carbon intensity [0.4]")] = None,
    chinchilla_tokens_per_param: Annotated[Optional[float], typer.Option(help="compute-optimal ratio [20]")] = None,
    inference_tokens_per_param: Annotated[Optional[float], typer.Option(help="inference-aware ratio [150]")] = None,
    law: Annotated[Optional[Path], typer.Option(help="fitted scaling law (JSON) for the compute-optimal split")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Back-of-the-envelope training plan: FLOPs, GPU-hours, days, cost, energy, CO2e, legal thresholds."""
    from components.planner import PlanError, build, render

    inputs = dict(params=params, tokens=tokens, flops=flops, layers=layers, d_model=d_model, seq_len=seq_len,
                  gpu=gpu, gpus=gpus, peak_tflops=peak_tflops, mfu=mfu, achieved_tflops=achieved_tflops,
                  usd_per_gpu_hour=usd_per_gpu_hour, watts_per_gpu=watts_per_gpu, pue=pue,
                  grid_kgco2e_per_kwh=grid_kgco2e_per_kwh, chinchilla_tokens_per_param=chinchilla_tokens_per_param,
                  inference_tokens_per_param=inference_tokens_per_param)
    try:
        result = build(inputs, law)
    except PlanError as err:
        fail(str(err))
    typer.echo(json.dumps(result, indent=2) if as_json else render(result))
