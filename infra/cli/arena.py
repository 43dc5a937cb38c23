"""`llm-lifecycle arena`: blind side-by-side chat, its votes and leaderboard."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from infra.cli.common import Device, Engine, ModelSpec, Timeout, app, fail


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
            fail(f"--host {host} lets every machine that reaches this one vote and use the models, with no "
                  "authentication; add --allow-remote to do it anyway (docs/arena.md: put a reverse proxy with "
                  "authentication in front)")
        typer.secho(f"warning: listening on {host}: anyone who reaches this machine can use the arena and its models "
                    "and vote, with no authentication (docs/arena.md has a reverse-proxy recipe)", fg="yellow", err=True)
    try:
        extra = [arena.EndpointOption.model_validate(yaml.safe_load(text)).contestant() for text in endpoint or []]
    except (ValidationError, yaml.YAMLError) as err:
        fail(f"--endpoint: {err}")
    specs = models or arena.registered_chat_models(ws)
    if len(specs) + len(extra) < 2:
        fail(f"the arena needs two models or more, it has {specs + [c.label for c in extra] or 'none'}: name them "
              "(llm-lifecycle arena sft dpo), register chat models (llm-lifecycle run), or add --endpoint")
    try:
        contestants, started = arena.start_models(specs, ws, engine=engine, device=device, timeout_s=timeout)
    except (serve.ServeError, StageError) as err:
        fail(str(err))
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
        fail(str(err))
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
        fail("no votes yet: start the arena (llm-lifecycle arena) and vote", code=1)
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
