"""Serve a model behind an OpenAI-compatible API, and chat with it in the terminal."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from infra.cli.common import Device, Engine, ModelSpec, Timeout, app, fail


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
            fail(f"name the model to serve: {ModelSpec}")
        if not serve.is_loopback(host) and allow_remote:
            typer.secho(f"warning: listening on {host}: anyone who reaches this machine can use the model, "
                        "with no authentication", fg="yellow", err=True)
        server = serve.start(serve.resolve(model, Workspace()), engine=engine, host=host, port=port, name=name,
                             device=device, timeout_s=timeout, allow_remote=allow_remote)
    except (serve.ServeError, StageError) as err:
        fail(str(err))
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
        fail(str(err))
