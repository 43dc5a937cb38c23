"""`llm-lifecycle arena`: a web page where people send a prompt to two anonymous models side by side, read both
replies as they stream, and vote; a leaderboard ranks the models (components/arena).

The page is a small static page (infra/arena_static/) over a JSON API served by FastAPI and uvicorn, which the
project already installs: Gradio, the usual tool for such pages, also works offline but would add a dozen
packages, conflicts with the pinned Pillow, and renders HTML in chat messages rather than showing it as text.

Replies come from the models' OpenAI-compatible servers (infra/serve.py, or any endpoint) through
components/openai_client.py. The model names stay on the server until the vote; a round whose replies did not
both complete (a server down, slow past the deadline, the page closed) cannot be voted on. There is no
authentication: the page listens on 127.0.0.1 unless told otherwise (docs/arena.md has a reverse-proxy recipe).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from components.arena import VOTES, Leaderboard, Vote, VoteStore, bradley_terry, choose_pair, contestant, leaderboard
from components.arena.plot import leaderboard_figure
from components.arena.ranking import pair_matrices
from components.params import StrictModel

CHAT_MODELS = ("llm-lifecycle-sft", "llm-lifecycle-dpo", "llm-lifecycle-ppo")  # not the reward model: it does not chat
PREFERRED_PORT = 7860
STATIC = Path(__file__).with_name("arena_static")
OPEN_ROUNDS = 10_000  # rounds kept in memory for their vote; the oldest are forgotten first
SIDES = ("a", "b")


class ArenaError(Exception):
    """A request the arena refuses; `status` is the HTTP status, the message is shown on the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Settings:
    max_prompt_chars: int = 4000
    reply_timeout_s: float = 120  # a side that has not finished by then fails, and the round cannot be voted on
    max_tokens: int = 256
    temperature: float = 0.7
    bootstrap_rounds: int = 1000


@dataclass(frozen=True)
class Contestant:
    """A model in the arena: its name and version (what the leaderboard ranks) and where to ask it."""

    name: str
    version: str
    base_url: str
    model_id: str
    api_key_env: str | None = None

    @property
    def label(self) -> str:
        return contestant(self.name, self.version)


class EndpointOption(StrictModel):
    """An OpenAI-compatible endpoint as `--endpoint` names it: `{name: gpt, base_url: https://.../v1, model:
    gpt-4o-mini, api_key_env: OPENAI_API_KEY}` (YAML or JSON)."""

    name: str = Field(pattern=r"^[\w.-]+$")
    base_url: str
    model: str
    version: str | None = Field(None, description="what the leaderboard shows after the name [the model id]")
    api_key_env: str | None = None

    def contestant(self) -> Contestant:
        return Contestant(self.name, self.version or self.model, self.base_url, self.model, self.api_key_env)


class RoundRequest(BaseModel):  # module level: FastAPI resolves the (string) annotations of its routes here
    prompt: str


class VoteRequest(BaseModel):
    vote: str


@dataclass
class Side:
    contestant: Contestant
    reply: str = ""
    state: str = "waiting"  # waiting → streaming → done | failed
    error: str = ""


@dataclass
class Round:
    id: str
    prompt: str
    sides: dict[str, Side]


class Arena:
    """Rounds, replies, votes and the leaderboard, behind the HTTP API of `create_app`."""

    def __init__(self, contestants: list[Contestant], store: VoteStore, settings: Settings = Settings(),
                 seed: int | None = None):
        labels = [c.label for c in contestants]
        if len(set(labels)) < 2:
            raise ArenaError(400, f"an arena needs two different models or more, got {labels}")
        self.contestants = {c.label: c for c in contestants}
        self.store, self.settings = store, settings
        self._rng = np.random.default_rng(seed)
        self._rounds: OrderedDict[str, Round] = OrderedDict()
        self._lock = threading.Lock()  # rounds and caches: the API serves from several threads
        self._cache: dict[str, tuple[int, object]] = {}

    def new_round(self, prompt: str) -> Round:
        prompt = prompt.strip()
        if not prompt:
            raise ArenaError(400, "Write a prompt first: it is empty.")
        if len(prompt) > self.settings.max_prompt_chars:
            raise ArenaError(413, f"The prompt has {len(prompt):,} characters; the limit is "
                                  f"{self.settings.max_prompt_chars:,}. Shorten it and send it again.")
        scores, battles = self._standings()
        with self._lock:
            pair = choose_pair(list(self.contestants), scores, battles, self._rng)
            played = Round(uuid.uuid4().hex, prompt, {side: Side(self.contestants[label])
                                                       for side, label in zip(SIDES, pair)})
            self._rounds[played.id] = played
            while len(self._rounds) > OPEN_ROUNDS:
                self._rounds.popitem(last=False)
        return played

    def stream(self, round_id: str, side_name: str) -> AsyncIterator[str]:
        """One side's reply as JSON lines: {"delta": text}... then {"done": finish_reason} or {"error": why}.
        Refused (ArenaError) before anything streams when the round or side is unknown or already asked."""
        side = self._claim(round_id, side_name)
        return self._relay(self._round(round_id).prompt, side_name, side)

    async def _relay(self, prompt: str, side_name: str, side: Side) -> AsyncIterator[str]:
        loop, chunks, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

        def put(item: tuple[str, str]) -> None:
            if not stop.is_set():  # once the relay has ended nobody reads, and its event loop may be closed
                loop.call_soon_threadsafe(chunks.put_nowait, item)

        # the openai client blocks: a thread of its own per reply, so a slow server cannot hold up the page
        threading.Thread(target=_ask, args=(side.contestant, prompt, self.settings, put, stop),
                         daemon=True).start()
        deadline, who = time.monotonic() + self.settings.reply_timeout_s, f"Model {side_name.upper()}"
        try:
            while True:
                try:
                    kind, text = await asyncio.wait_for(chunks.get(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    kind, text = "error", f"did not finish within {self.settings.reply_timeout_s:g} s"
                if kind == "delta":
                    side.reply += text
                    yield _line(delta=text)
                elif kind == "error":
                    side.state, side.error = "failed", f"{who} {text}"
                    yield _line(error=f"{side.error}. No vote can be recorded for this round: start a new one.")
                    return
                else:
                    side.state = "done"
                    yield _line(done=text)
                    return
        finally:
            stop.set()
            if side.state == "streaming":  # the page went away mid-reply
                side.state, side.error = "failed", f"{who}'s reply was not read to the end"

    def vote(self, round_id: str, choice: str) -> dict:
        """Record the vote (once per round) and reveal the models."""
        if choice not in VOTES:
            raise ArenaError(400, f"unknown vote {choice!r}; one of {', '.join(VOTES)}")
        stored = self.store.find(round_id)
        if stored is not None:
            return _reveal(stored, recorded=False)
        played = self._round(round_id)
        unfinished = [side.error or f"Model {name.upper()} has not finished answering"
                      for name, side in played.sides.items() if side.state != "done"]
        if unfinished:
            raise ArenaError(409, f"{'; '.join(unfinished)}. No vote can be recorded for this round: start a new one.")
        a, b = played.sides["a"], played.sides["b"]
        vote = Vote(played.id, played.prompt, a.contestant.name, a.contestant.version, a.reply,
                    b.contestant.name, b.contestant.version, b.reply, choice)
        recorded = self.store.record(vote)
        return _reveal(vote if recorded else self.store.find(round_id), recorded)

    def board(self) -> dict:
        """The leaderboard as the page shows it; recomputed only when the votes changed."""
        def compute() -> dict:
            board = leaderboard(self.store.battles(), self.settings.bootstrap_rounds)
            return board_json(board, [label for label in self.contestants if label not in board.table.index])

        return self._cached("board", compute)

    def _standings(self) -> tuple[pd.Series, pd.DataFrame]:
        """Point scores and vote counts per pair, for pairing (no bootstrap: cheap)."""
        def compute() -> tuple[pd.Series, pd.DataFrame]:
            battles = self.store.battles()
            if battles.empty:
                return pd.Series(dtype=float), pd.DataFrame()
            scores = bradley_terry(battles)
            return scores, pair_matrices(battles, list(scores.index))[1]

        return self._cached("standings", compute)

    def _cached(self, key: str, compute: Callable):
        count = self.store.count()
        with self._lock:
            cached = self._cache.get(key)
        if cached and cached[0] == count:
            return cached[1]
        value = compute()
        with self._lock:
            self._cache[key] = (count, value)
        return value

    def _round(self, round_id: str) -> Round:
        with self._lock:
            played = self._rounds.get(round_id)
        if played is None:
            raise ArenaError(404, "This round is unknown or too old (the page may have restarted): start a new one.")
        return played

    def _claim(self, round_id: str, side_name: str) -> Side:
        if side_name not in SIDES:
            raise ArenaError(404, f"no side {side_name!r}; sides are a and b")
        played = self._round(round_id)
        with self._lock:
            side = played.sides[side_name]
            if side.state != "waiting":
                raise ArenaError(409, f"Model {side_name.upper()}'s reply was already requested in this round")
            side.state = "streaming"
        return side


def _ask(contestant: Contestant, prompt: str, settings: Settings, put: Callable[[tuple[str, str]], None],
         stop: threading.Event) -> None:
    """Stream one reply from the contestant's server into `put`: ("delta", text)..., then ("end", finish
    reason) or ("error", why). Runs in a thread of its own."""
    from components.openai_client import chat_completion

    try:
        chunks = chat_completion(contestant.base_url, contestant.model_id, [{"role": "user", "content": prompt}],
                                 api_key_env=contestant.api_key_env, stream=True, max_tokens=settings.max_tokens,
                                 temperature=settings.temperature, timeout=settings.reply_timeout_s)
        finish = "stop"
        for chunk in chunks:
            if stop.is_set():  # the page stopped reading (or the deadline passed): free the server
                chunks.close()
                return
            for choice in chunk.choices:
                if choice.delta.content:
                    put(("delta", choice.delta.content))
                finish = choice.finish_reason or finish
        put(("end", finish))
    except Exception as err:  # noqa: BLE001 (whatever went wrong, the page must hear of it, not wait for the deadline)
        put(("error", _explain(err)))


def _explain(err: Exception) -> str:
    """Why a reply failed, in words for the page; it never names the model or its address."""
    from openai import APIConnectionError, APIStatusError, APITimeoutError

    if isinstance(err, APITimeoutError):
        return "did not answer in time (its server is slow or stuck)"
    if isinstance(err, APIConnectionError):
        return "could not be reached (its server is down)"
    if isinstance(err, APIStatusError):
        return f"failed: its server answered HTTP {err.status_code}"
    return f"failed: {type(err).__name__}"


def _line(**fields) -> str:
    return json.dumps(fields) + "\n"


def _reveal(vote: Vote, recorded: bool) -> dict:
    return {"recorded": recorded, "vote": vote.vote, "model_a": vote.contestant_a, "model_b": vote.contestant_b}


def board_json(board: Leaderboard, unvoted: list[str]) -> dict:
    """The leaderboard as plain JSON: ranked rows, the matrices (None where no decisive vote), models without votes."""
    rows = [{"rank": rank, "model": model, **{k: round(float(v), 1) for k, v in row[["score", "lower", "upper"]].items()},
             **{k: int(v) for k, v in row[["votes", "wins", "losses", "ties"]].items()}}
            for rank, (model, row) in enumerate(board.table.iterrows(), start=1)]
    win_rate = board.win_rate.astype(float).round(3)
    return {"total_votes": board.total_votes if rows else 0, "rows": rows, "models": list(board.table.index),
            "win_rate": [[None if np.isnan(x) else x for x in r] for r in win_rate.to_numpy().tolist()],
            "battles": board.battles.astype(int).to_numpy().tolist(), "unvoted": unvoted}


def create_app(arena: Arena):
    """The page and its API: POST /api/rounds {prompt}, GET /api/rounds/ID/{a,b} (the reply, streamed as JSON
    lines), POST /api/rounds/ID/vote {vote}, GET /api/leaderboard, GET /api/settings."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from fastapi.staticfiles import StaticFiles
    app = FastAPI(title="llm-lifecycle arena", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def no_foreign_code(request: Request, call_next):
        """Only the page's own script may run (no inline script, nothing from elsewhere), and no other site may
        frame it: a reply or prompt that sneaks markup past the page still cannot execute."""
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(ArenaError)
    async def refused(_request: Request, err: ArenaError):
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/settings")
    def settings():
        return {"max_prompt_chars": arena.settings.max_prompt_chars, "models": len(arena.contestants)}

    @app.post("/api/rounds")
    def new_round(body: RoundRequest):
        return {"round_id": arena.new_round(body.prompt).id}

    @app.get("/api/rounds/{round_id}/{side}")
    async def reply(round_id: str, side: str):
        return StreamingResponse(arena.stream(round_id, side), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-store"})

    @app.post("/api/rounds/{round_id}/vote")
    def vote(round_id: str, body: VoteRequest):
        return arena.vote(round_id, body.vote)

    @app.get("/api/leaderboard")
    def board():
        return arena.board()

    return app


def default_db_url(ws) -> str:
    """The embedded default: a SQLite file in the workspace's state folder."""
    from components.arena import sqlite_url

    return sqlite_url(ws.state_dir / "arena" / "votes.db")


def registered_chat_models(ws) -> list[str]:
    """models:/NAME/N for the latest version of each registered chat model (the registry at MLFLOW_TRACKING_URI,
    else the workspace's embedded one)."""
    specs = []
    for name in CHAT_MODELS:
        number = _latest_version(ws, name)
        if number is not None:
            specs.append(f"models:/{name}/{number}")
    return specs


def _latest_version(ws, name: str) -> int | None:
    from mlflow import MlflowClient

    from tasks.tracking import default_tracking_uri

    uri = default_tracking_uri(ws.root)
    versions = MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name = '{name}'")
    return max((int(v.version) for v in versions), default=None)


def _pinned(spec: str, ws) -> str:
    """models:/NAME/latest → models:/NAME/N: the leaderboard ranks a version, never a moving `latest`."""
    from infra.serve import REGISTRY

    name, _, version = spec.removeprefix(REGISTRY).rpartition("/")
    if spec.startswith(REGISTRY) and version == "latest":
        number = _latest_version(ws, name)
        return f"{REGISTRY}{name}/{number}" if number is not None else spec  # serve.resolve says what is missing
    return spec


def start_models(specs: list[str], ws, **start_options) -> tuple[list[Contestant], list[str]]:
    """A server for each model (infra/serve.py; a running one is reused); returns the contestants and the names
    of the servers started here, for the caller to stop."""
    from infra import serve

    contestants, started = [], []
    try:
        for spec in specs:
            spec = _pinned(spec, ws)
            model = serve.resolve(spec, ws)
            server = serve.start(model, **start_options)
            if not server.get("reused"):
                started.append(server["name"])
            contestants.append(Contestant(*_name_version(spec, model), server["base_url"], server["model"]))
    except BaseException:
        from infra import stack

        stack.stop_model_servers(started)
        raise
    return contestants, started


def _name_version(spec: str, model) -> tuple[str, str]:
    """A registered version is NAME and its number; a folder is its name and a fingerprint of its files (a rebuilt
    folder is a new contestant); a hub id is itself."""
    from infra.serve import REGISTRY

    if spec.startswith(REGISTRY):
        name, _, number = spec.removeprefix(REGISTRY).rpartition("/")
        return name, number
    if not model.local:
        return model.name, "hub"
    files = sorted(p for p in Path(model.source).rglob("*") if p.is_file())
    listing = "\n".join(f"{p.relative_to(model.source)} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)
    return model.name, "local-" + hashlib.sha256(listing.encode()).hexdigest()[:8]


def serve_arena(arena: Arena, host: str, port: int) -> None:
    """Serve the page until Ctrl-C."""
    import uvicorn

    uvicorn.run(create_app(arena), host=host, port=port, log_level="warning", access_log=False)


def export_pairs(store: VoteStore, out: Path) -> dict:
    """Every decisive vote as a preference pair (JSON Lines, the `pairs` format, origin arena); the tally."""
    from components.arena import write_pairs

    return dict(write_pairs(store.votes(), out))


def log_leaderboard(board: Leaderboard, run_id: str, prefix: str = "arena") -> None:
    """The leaderboard into an MLflow run: a table (PREFIX/leaderboard.json, the Tracking UI shows it), the plot
    (PREFIX/leaderboard.png), and the vote count as a metric. For a stage: `log_leaderboard(leaderboard(
    VoteStore(url).battles()), run.run_id)`."""
    from tasks.tracking import client

    if board.table.empty:
        return
    mlflow = client()
    mlflow.log_table(run_id, board.table.reset_index().round(1), f"{prefix}/leaderboard.json")
    figure = leaderboard_figure(board)
    try:
        mlflow.log_figure(run_id, figure, f"{prefix}/leaderboard.png")
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
    mlflow.log_metric(run_id, f"{prefix}.votes", board.total_votes)
