"""Run the DAG and look into it: run, why, scaling, stage, params, lineage, report."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Annotated, Optional

import typer

from infra.cli.common import Sets, app, fail


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
        fail(str(err))
    from flows.pipeline import llm_lifecycle
    from tasks.failure import summarize

    ws = Workspace()
    with _log_to_file(ws) as log:
        try:
            outcomes = llm_lifecycle(preset=preset, overrides=overrides, stages=stages, force=force, push=push,
                                     lock_wait_s=wait)
        except Exception as err:  # the traceback is in the log; the user gets the stage, its error and a hint
            fail(summarize(str(err), str(log), ws).render(), code=1)
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
        fail(str(err))


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
        fail(str(err))
    from components.scaling import ScalingFitError
    from flows.scaling import llm_lifecycle_scaling

    try:
        result = llm_lifecycle_scaling(preset=preset, overrides=overrides, sweep=sweep, lock_wait_s=wait)
    except ScalingFitError as err:
        fail(f"{err}\nThe trained points are kept (reports/scaling/points.csv) and reused by the next sweep.")
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
        fail(f"{err}\nThe output was not published; the next stage will not run.", EXIT_GATE_FAILED)
    except StageError as err:  # a missing or changed input, a full disk: the message names the path and the fix
        fail(str(err))
    except ParamsError as err:
        fail(str(err))
    except OSError as err:
        if not is_transient(err):
            raise
        fail(f"network read failed, a retry may help: {err}", EXIT_TRANSIENT)
    typer.echo(json.dumps(metrics, sort_keys=True))


@app.command()
def report() -> None:
    """Print the latest report card: every evaluated model's scores side by side (the report stage's table)."""
    from tasks.dag import Workspace

    ws = Workspace()
    card = ws.root / ws.stage("report").data_out / "report.md"
    if not card.exists():
        fail(f"no report card at {card.relative_to(ws.root)} yet: run the pipeline (`llm-lifecycle run`), or "
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
        fail(str(err))
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
        fail("name a run (llm-lifecycle lineage RUN_ID) or a URL (llm-lifecycle lineage --contains URL), one of them")
    ws = Workspace()
    mlflow.set_tracking_uri(default_tracking_uri(ws.root))
    if contains:
        report = lin.contains(ws, contains)
        typer.echo(json.dumps(report, indent=2) if as_json else lin.render_contains(report))
        return
    tree = lin.trace(run_id)
    typer.echo(json.dumps(tree, indent=2) if as_json else lin.render(tree))
