"""What every command of `llm-lifecycle` shares: the app, the error exit, the option types."""
from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

for _var, _value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                     "MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_var, _value)

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="An end-to-end LLM lifecycle pipeline, one versioned DAG.")

Sets = Annotated[Optional[list[str]], typer.Option("--set", help="override, e.g. crawl.max_records=50")]
ModelSpec = "models:/NAME/VERSION (or models:/NAME/latest), a stage (sft, pretrain), a Hugging Face folder or a hub id"
Engine = Annotated[str, typer.Option(help="transformers (CPU or GPU), or vllm (GPU, installed separately)")]
Device = Annotated[str, typer.Option(help="transformers engine: auto, cpu, cuda:0, ...")]
Timeout = Annotated[float, typer.Option(help="seconds the model gets to load and the server to answer")]


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)
