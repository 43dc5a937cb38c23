"""`llm-lifecycle`: run the DAG, run one stage, audit lineage, manage the local stack, serve, chat with and evaluate
models, print the report card."""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

for _var, _value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                     "MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_var, _value)

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="An end-to-end LLM lifecycle pipeline, one versioned DAG.")
stack_app = typer.Typer(no_args_is_help=True, help="The local stack: Prefect server + worker, MLflow server.")
app.add_typer(stack_app, name="stack")

Sets = Annotated[Optional[list[str]], typer.Option("--set", help="override, e.g. crawl.max_records=50")]
ModelSpec = "models:/NAME/VERSION (or models:/NAME/latest), a stage (sft, pretrain), a Hugging Face folder or a hub id"
Engine = Annotated[str, typer.Option(help="transformers (CPU or GPU), or vllm (GPU, installed separately)")]
Device = Annotated[str, typer.Option(help="transformers engine: auto, cpu, cuda:0, ...")]
Timeout = Annotated[float, typer.Option(help="seconds the model gets to load and the server to answer")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


@app.command()
def run(
    preset: Annotated[str, typer.Option(help="preset from params.yaml")] = "tiny",
    set_: Sets = None,
    stages: Annotated[Optional[list[str]], typer.Option("--stages", help="only these stages")] = None,
    force: Annotated[bool, typer.Option(help="rerun the selected stages even if unchanged")] = False,
    push: Annotated[bool, typer.Option(help="dvc push the outputs after a successful run")] = True,
    wait: Annotated[float, typer.Option(help="seconds to wait for another run on this workspace")] = 0,
) -> None:
    """Run the DAG in this process (a temporary Prefect API, no servers needed)."""
    from tasks.dag import Workspace
    from tasks.params import ParamsError, parse_overrides, resolve

    try:
        overrides = parse_overrides(set_ or [])
        resolve(Workspace(), preset, overrides)  # fail fast, before a Prefect API is even started
    except ParamsError as err:
        _fail(str(err))
    from flows.pipeline import llm_lifecycle
    from tasks.failure import summarize

    ws = Workspace()
    with _log_to_file(ws) as log:
        try:
            outcomes = llm_lifecycle(preset=preset, overrides=overrides, stages=stages, force=force, push=push,
                                     lock_wait_s=wait)
        except Exception as err:  # the traceback is in the log; the user gets the stage, its error and a hint
            _fail(summarize(str(err), str(log), ws).render(), code=1)
    typer.echo(f"log: {log}")
    for o in outcomes:
        typer.echo(f"{o['stage']:<12} {o['status']:<8} {o.get('duration_s', '')}")


@contextmanager
def _log_to_file(ws):
    """Copy this run's Prefect log (every stage's output included) to .llm-lifecycle/logs/run-TIME.log."""
    import logging
    import time

    path = ws.state_dir / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"))
    logging.getLogger("prefect").addHandler(handler)
    try:
        yield path
    finally:
        logging.getLogger("prefect").removeHandler(handler)
        handler.close()


@app.command()
def why(flow_run: Annotated[Optional[str], typer.Argument(
        help="a flow run id [the latest failed run of the llm-lifecycle flow]")] = None) -> None:
    """Why a pipeline run on the Prefect API failed (a deployment's, e.g. infra/main.sh's): the failed stage, its
    last error lines, where the full log is, and a hint when the cause is known."""
    from tasks.dag import Workspace
    from tasks.failure import from_flow_run

    try:
        typer.echo(from_flow_run(flow_run, Workspace()).render())
    except LookupError as err:
        _fail(str(err))


def _numbers(text: Optional[str], kind=float) -> Optional[list]:
    return [kind(float(x)) for x in text.split(",")] if text else None


@app.command()
def scaling(
    preset: Annotated[str, typer.Option(help="preset whose pretrain settings the sweep uses")] = "tiny",
    set_: Sets = None,
    budgets: Annotated[Optional[str], typer.Option(help="FLOP budgets, comma-separated [5e11,1e12,2e12]")] = None,
    depths: Annotated[Optional[str], typer.Option(help="model depths, comma-separated [2,3,4,6]")] = None,
    target_flops: Annotated[Optional[float], typer.Option(help="budget to recommend a size for [1e14]")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="bootstrap resamples [200]")] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for another run on this workspace")] = 0,
) -> None:
    """isoFLOP sweep in this process: train the grid, fit the scaling laws, write params.scaling.yaml."""
    from tasks.dag import Workspace
    from tasks.params import ParamsError, parse_overrides, resolve
    from tasks.scaling import SweepParams

    given = {"budgets": _numbers(budgets), "depths": _numbers(depths, int), "target_flops": target_flops,
             "bootstrap": bootstrap}
    sweep = {k: v for k, v in given.items() if v is not None}
    try:
        overrides = parse_overrides(set_ or [])
        resolve(Workspace(), preset, overrides)
        SweepParams(**sweep)
    except (ParamsError, ValueError) as err:
        _fail(str(err))
    from components.scaling import ScalingFitError
    from flows.scaling import llm_lifecycle_scaling

    try:
        result = llm_lifecycle_scaling(preset=preset, overrides=overrides, sweep=sweep, lock_wait_s=wait)
    except ScalingFitError as err:
        _fail(f"{err}\nThe trained points are kept (reports/scaling/points.csv) and reused by the next sweep.")
    advice, pretrain = result["recommendation"], result["overlay"]["pretrain"]
    typer.echo(f"N_opt ∝ C^{result['law']['a']:.3f}, D_opt ∝ C^{result['law']['b']:.3f}; at "
               f"{result['target_flops']:.3g} FLOPs: N ≈ {advice['params']:.3g}, D ≈ {advice['tokens']:.3g} → "
               f"depth {pretrain['model']['depth']}, {pretrain['steps']} steps (params.scaling.yaml, --preset scaled)")
    for warning in result["warnings"]:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)


@app.command()
def stage(name: str, progress: Annotated[bool, typer.Option(help="progress bars")] = True) -> None:
    """Run one stage in this workspace: the command DVC runs for each stage of dvc.yaml."""
    from tasks.dag import StageError, Workspace
    from tasks.gates import GateFailed
    from tasks.params import ParamsError
    from tasks.stage import EXIT_GATE_FAILED, EXIT_TRANSIENT, execute, is_transient

    try:
        metrics = execute(Workspace(), name, progress=progress and sys.stderr.isatty())
    except GateFailed as err:
        _fail(f"{err}\nThe output was not published; the next stage will not run.", EXIT_GATE_FAILED)
    except StageError as err:  # a missing or changed input, a full disk: the message names the path and the fix
        _fail(str(err))
    except ParamsError as err:
        _fail(str(err))
    except OSError as err:
        if not is_transient(err):
            raise
        _fail(f"network read failed, a retry may help: {err}", EXIT_TRANSIENT)
    typer.echo(json.dumps(metrics, sort_keys=True))


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
        _fail(str(err))
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
        _fail(str(err))
    with staged_dir(out) as staging:
        report_card(rows, staging)
        pd.DataFrame(rows).to_parquet(staging / "scores.parquet", index=False)
    typer.echo((out / "report.md").read_text() + f"\n{len(rows)} scores of {len(models)} model(s) → {out}/")


@app.command()
def report() -> None:
    """Print the latest report card: every evaluated model's scores side by side (the report stage's table)."""
    from tasks.dag import Workspace

    ws = Workspace()
    card = ws.root / ws.stage("report").data_out / "report.md"
    if not card.exists():
        _fail(f"no report card at {card.relative_to(ws.root)} yet: run the pipeline (`llm-lifecycle run`), or "
              "`dvc pull` it; `llm-lifecycle evaluate MODEL...` scores models outside it")
    typer.echo(card.read_text())


@app.command()
def params(
    preset: Annotated[str, typer.Option(help="preset from params.yaml")] = "tiny",
    set_: Sets = None,
) -> None:
    """Validate the parameters and write params.effective.yaml (what `dvc repro` then uses)."""
    from tasks.dag import Workspace
    from tasks.params import ParamsError, parse_overrides, resolve, write_effective
    from tasks.sources import write_source_digests

    ws = Workspace()
    try:
        params = resolve(ws, preset, parse_overrides(set_ or []))
    except ParamsError as err:
        _fail(str(err))
    path = write_effective(ws, params)
    write_source_digests(ws, params)
    typer.echo(path.read_text())


@app.command()
def lineage(run_id: Annotated[Optional[str], typer.Argument(help="an MLflow run id, or models:/NAME/VERSION")] = None,
            contains: Annotated[Optional[str], typer.Option(
                "--contains", help="a URL or URL prefix: what descends from its records, and how to rebuild without them")] = None,
            as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """The upstream chain of an MLflow run or registered model version: stages, their inputs and outputs, back to
    the raw sources. With --contains URL (a takedown request): every stage output, MLflow run and registered model
    version that descends from that URL's records, and the blocklist entry that rebuilds without them."""
    from tasks import lineage as lin
    from tasks.dag import Workspace
    from tasks.tracking import default_tracking_uri
    import mlflow

    if (run_id is None) == (contains is None):
        _fail("name a run (llm-lifecycle lineage RUN_ID) or a URL (llm-lifecycle lineage --contains URL), one of them")
    ws = Workspace()
    mlflow.set_tracking_uri(default_tracking_uri(ws.root))
    if contains:
        report = lin.contains(ws, contains)
        typer.echo(json.dumps(report, indent=2) if as_json else lin.render_contains(report))
        return
    tree = lin.trace(run_id)
    typer.echo(json.dumps(tree, indent=2) if as_json else lin.render(tree))


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
        _fail(str(err))
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
        _fail(str(err))
    typer.echo(json.dumps(result, indent=2) if as_json else render(result))


@app.command("serve")
def serve_model(
    model: Annotated[Optional[str], typer.Argument(help=f"{ModelSpec}; with --stop: a server's name, or all")] = None,
    stop: Annotated[bool, typer.Option("--stop", help="stop the model server MODEL (all without MODEL)")] = False,
    engine: Engine = "transformers",
    port: Annotated[Optional[int], typer.Option(help="port to listen on [8000, or a free one if taken]")] = None,
    host: Annotated[str, typer.Option(help="address to listen on; beyond loopback needs --allow-remote")] = "127.0.0.1",
    allow_remote: Annotated[bool, typer.Option(help="let other machines reach --host (no authentication)")] = False,
    name: Annotated[Optional[str], typer.Option(help="the server's name in `stack status` [from the model]")] = None,
    device: Device = "auto",
    timeout: Timeout = 300,
) -> None:
    """Serve a model behind an OpenAI-compatible API (/v1/chat/completions, /v1/models) in the background, like
    the stack's services: `stack status` lists it, `serve --stop NAME` or `stack down` stops it."""
    from infra import serve
    from tasks.dag import StageError, Workspace

    try:
        if stop:
            typer.echo(f"stopped {', '.join(serve.stop(model)) or 'nothing'}")
            return
        if model is None:
            _fail(f"name the model to serve: {ModelSpec}")
        if not serve.is_loopback(host) and allow_remote:
            typer.secho(f"warning: listening on {host}: anyone who reaches this machine can use the model, "
                        "with no authentication", fg="yellow", err=True)
        server = serve.start(serve.resolve(model, Workspace()), engine=engine, host=host, port=port, name=name,
                             device=device, timeout_s=timeout, allow_remote=allow_remote)
    except (serve.ServeError, StageError) as err:
        _fail(str(err))
    reused = server.get("reused")
    ready = "" if reused else f", healthy after {server['start_s']} s"
    typer.echo("\n".join([
        f"model server {server['name']} {'already serves' if reused else 'serves'} {server['spec']} "
        f"({server['engine']}, pid {server['pid']}){ready}",
        f"  base_url: {server['base_url']}", f"  model:    {server['model']}", f"  log:      {server['log']}",
        f"openai: OpenAI(base_url='{server['base_url']}', api_key='none').chat.completions.create("
        f"model='{server['model']}', messages=[...], max_tokens=256)",
        f"chat: llm-lifecycle chat {model}    stop: llm-lifecycle serve --stop {server['name']}"]))


@app.command()
def chat(
    model: Annotated[str, typer.Argument(help=ModelSpec)],
    temperature: Annotated[float, typer.Option(help="sampling temperature; 0 is greedy")] = 0.7,
    max_tokens: Annotated[int, typer.Option(help="most tokens in one reply")] = 256,
    system: Annotated[Optional[str], typer.Option(help="system prompt (kept by /reset)")] = None,
    engine: Engine = "transformers",
    device: Device = "auto",
    timeout: Timeout = 300,
) -> None:
    """Chat with a model in the terminal, replies streamed. Uses the running model server for MODEL, or starts
    one and stops it when you leave. /reset forgets the conversation, /exit (or Ctrl-D) leaves."""
    from infra import serve
    from tasks.dag import StageError, Workspace

    try:
        target = serve.resolve(model, Workspace())
        with serve.server_for(target, engine=engine, device=device, timeout_s=timeout) as server:
            how = "started for this chat" if server["temporary"] else "running"
            typer.echo(f"model server {server['name']} ({how}) at {server['base_url']}; /reset forgets the "
                       "conversation, /exit leaves", err=True)
            serve.converse(server["base_url"], server["model"], system, temperature=temperature,
                           max_tokens=max_tokens)
    except (serve.ServeError, StageError) as err:
        _fail(str(err))


class _ArenaCommands(TyperGroup):
    """`arena [MODEL ...]` starts the arena (its `start` command); `arena export` and `arena leaderboard` work
    on its votes."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] != "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


arena_app = typer.Typer(cls=_ArenaCommands, help="Blind side-by-side chat with two models, votes, a leaderboard.")
app.add_typer(arena_app, name="arena")
ArenaDb = Annotated[Optional[str], typer.Option(
    "--db", help="the vote database: a SQLAlchemy URL, postgresql+psycopg2://USER:PASSWORD@HOST/DB for PostgreSQL "
                 "[a SQLite file: .llm-lifecycle/arena/votes.db]")]


def _arena_store(db: Optional[str]):
    from components.arena import VoteStore
    from infra.arena import default_db_url
    from tasks.dag import Workspace

    return VoteStore(db or default_db_url(Workspace()))


@arena_app.command("start")
def arena_start(
    models: Annotated[Optional[list[str]], typer.Argument(
        help=f"{ModelSpec} [the latest version of each registered chat model: sft, dpo, ppo]")] = None,
    endpoint: Annotated[Optional[list[str]], typer.Option(
        help="an OpenAI-compatible endpoint to add, in YAML: '{name: gpt, base_url: https://api.openai.com/v1, "
             "model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}' (the key is read from that variable)")] = None,
    db: ArenaDb = None,
    port: Annotated[Optional[int], typer.Option(help="the page's port [7860, or a free one if taken]")] = None,
    host: Annotated[str, typer.Option(help="address to listen on; beyond loopback needs --allow-remote")] = "127.0.0.1",
    allow_remote: Annotated[bool, typer.Option(help="let other machines reach --host (no authentication)")] = False,
    max_tokens: Annotated[int, typer.Option(help="most tokens in one reply")] = 256,
    temperature: Annotated[float, typer.Option(help="sampling temperature of both models")] = 0.7,
    max_prompt_chars: Annotated[int, typer.Option(help="longer prompts are refused")] = 4000,
    reply_timeout: Annotated[float, typer.Option(help="seconds a reply may take; a round past it cannot be voted on")] = 120,
    engine: Engine = "transformers",
    device: Device = "auto",
    timeout: Timeout = 300,
) -> None:
    """Start the arena (the default command): a server for each model (running ones are reused), then the page.
    Ctrl-C stops the page and the model servers it started."""
    import yaml
    from pydantic import ValidationError
    from sqlalchemy.engine import make_url

    from infra import arena, serve, stack
    from tasks.dag import StageError, Workspace

    ws = Workspace()
    if not serve.is_loopback(host):
        if not allow_remote:
            _fail(f"--host {host} lets every machine that reaches this one vote and use the models, with no "
                  "authentication; add --allow-remote to do it anyway (docs/arena.md: put a reverse proxy with "
                  "authentication in front)")
        typer.secho(f"warning: listening on {host}: anyone who reaches this machine can use the arena and its models "
                    "and vote, with no authentication (docs/arena.md has a reverse-proxy recipe)", fg="yellow", err=True)
    try:
        extra = [arena.EndpointOption.model_validate(yaml.safe_load(text)).contestant() for text in endpoint or []]
    except (ValidationError, yaml.YAMLError) as err:
        _fail(f"--endpoint: {err}")
    specs = models or arena.registered_chat_models(ws)
    if len(specs) + len(extra) < 2:
        _fail(f"the arena needs two models or more, it has {specs + [c.label for c in extra] or 'none'}: name them "
              "(llm-lifecycle arena sft dpo), register chat models (llm-lifecycle run), or add --endpoint")
    try:
        contestants, started = arena.start_models(specs, ws, engine=engine, device=device, timeout_s=timeout)
    except (serve.ServeError, StageError) as err:
        _fail(str(err))
    try:
        url = db or arena.default_db_url(ws)
        settings = arena.Settings(max_prompt_chars=max_prompt_chars, reply_timeout_s=reply_timeout,
                                  max_tokens=max_tokens, temperature=temperature)
        game = arena.Arena(contestants + extra, _arena_store(url), settings)
        port = port or serve.free_port(host, arena.PREFERRED_PORT)
        typer.echo(f"arena: http://{host}:{port}/ with {len(game.contestants)} models: "
                   f"{', '.join(game.contestants)}\n  votes: {make_url(url).render_as_string(hide_password=True)}\n"
                   "  Ctrl-C stops it" + (f" and the model servers it started ({', '.join(started)})" if started else ""))
        arena.serve_arena(game, host, port)
    except arena.ArenaError as err:
        _fail(str(err))
    finally:
        stack.stop_model_servers(started)


@arena_app.command("export")
def arena_export(out: Annotated[Path, typer.Option(help="the JSON Lines file to write")], db: ArenaDb = None) -> None:
    """The decisive votes as preference pairs: the preferences stage's `pairs` format, with origin arena. Ties,
    "both bad" votes, and votes whose two replies are the same or empty make no pair."""
    from infra.arena import export_pairs

    tally = export_pairs(_arena_store(db), out)
    others = {reason: n for reason, n in tally.items() if reason != "pairs"}
    typer.echo(f"{tally.get('pairs', 0)} pairs → {out}; votes without a pair: {json.dumps(others)}\n"
               f"preferences source: {{name: arena, format: pairs, uri: {out.resolve()}, origin: arena}}")


@arena_app.command("leaderboard")
def arena_leaderboard(
    db: ArenaDb = None,
    rounds: Annotated[int, typer.Option(help="bootstrap resamples for the 95% intervals")] = 1000,
    to_mlflow: Annotated[bool, typer.Option("--mlflow", help="also log it (table and plot) to an MLflow run")] = False,
) -> None:
    """The Bradley-Terry leaderboard of the votes (Elo scale, bootstrap intervals) and the win-rate matrix."""
    import mlflow

    from components.arena import leaderboard
    from infra.arena import log_leaderboard
    from tasks import tracking
    from tasks.dag import Workspace

    board = leaderboard(_arena_store(db).battles(), rounds)
    if board.table.empty:
        _fail("no votes yet: start the arena (llm-lifecycle arena) and vote", code=1)
    typer.echo(f"{board.total_votes} votes\n{board.table.round(1).to_string()}\n\nwin rate (row over column, ties "
               f"left out):\n{board.win_rate.round(2).to_string()}")
    if to_mlflow:
        root = Workspace().root
        mlflow.set_tracking_uri(tracking.default_tracking_uri(root))
        run_id = tracking.start_run(root, "arena-leaderboard", {"stage": "arena"})
        try:
            log_leaderboard(board, run_id)
        finally:
            tracking.end_run(run_id, ok=True)
        typer.echo(f"logged to MLflow run {run_id}")


@stack_app.command("up")
def stack_up(s3: Annotated[bool, typer.Option("--s3", help="add a loopback S3 server for DVC and MLflow")] = False) -> None:
    """Start Prefect server, worker and MLflow server on 127.0.0.1 and register the deployments."""
    from infra import stack

    typer.echo(stack.up(s3=s3))


@stack_app.command("status")
def stack_status() -> None:
    """URLs and health of the stack's services and of the model servers (exit code 1: a service is down)."""
    from infra import stack

    report, healthy = stack.status()
    typer.echo(report)
    raise typer.Exit(0 if healthy else 1)


@stack_app.command("down")
def stack_down() -> None:
    """Stop exactly what `stack up` and `serve` started."""
    from infra import stack

    typer.echo(stack.down())


@stack_app.command("env")
def stack_env() -> None:
    """Shell exports that point the prefect and mlflow CLIs at the stack: eval "$(llm-lifecycle stack env)"."""
    from infra import stack

    typer.echo("\n".join(f"export {k}={v}" for k, v in stack.client_env().items()))


if __name__ == "__main__":
    app()
