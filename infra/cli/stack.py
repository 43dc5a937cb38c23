"""`llm-lifecycle stack`: the local stack's services."""
from __future__ import annotations

from typing import Annotated

import typer

from infra.cli.common import app

stack_app = typer.Typer(no_args_is_help=True, help="The local stack: Prefect server + worker, MLflow server.")
app.add_typer(stack_app, name="stack")


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

