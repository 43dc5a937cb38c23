"""A bounded local load test of the arena: N concurrent voters, each playing whole rounds (a prompt, both replies
streamed to the end, a vote) against 127.0.0.1 only, for at most --rounds each and --duration seconds overall.

    python benchmarks/arena_load.py --stub --voters 32 --duration 60   # the arena alone: stub model servers
    python benchmarks/arena_load.py --url http://127.0.0.1:7860 --voters 8 --duration 60   # a running arena

--stub starts, in a child process, an OpenAI-compatible stub server (three stub models, 16 tokens 10 ms apart) and
an arena on a throw-away SQLite file, so what is measured is the page server, the streaming and the vote store.
Prints one JSON object: rounds played and failed, votes recorded (and, with --stub, counted in the database),
rounds per second, and round latency percentiles. Results: benchmarks/RESULTS.md, "Arena".
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from fastapi import FastAPI, Request  # at module level: FastAPI reads the routes' annotations here
from fastapi.responses import StreamingResponse

MAX_VOTERS, MAX_DURATION_S = 64, 300  # the bounds: this is a smoke of local capacity, not a stress tool
VOTES = ("a", "b", "tie", "both_bad")


async def voter(client: httpx.AsyncClient, deadline: float, rounds: int, seed: int, results: dict) -> None:
    rng = random.Random(seed)
    for _ in range(rounds):
        if time.monotonic() > deadline:
            return
        started = time.monotonic()
        try:
            created = await client.post("/api/rounds", json={"prompt": f"Tell me about the number {rng.random()}"})
            round_id = created.raise_for_status().json()["round_id"]
            replies = await asyncio.gather(*(read(client, round_id, side) for side in ("a", "b")))
            if not all(replies):
                results["failed"] += 1
                continue
            voted = (await client.post(f"/api/rounds/{round_id}/vote", json={"vote": rng.choice(VOTES)})).json()
            results["recorded"] += voted["recorded"]
            results["latencies"].append(time.monotonic() - started)
        except (httpx.HTTPError, KeyError) as err:
            results["failed"] += 1
            results["errors"].append(f"{type(err).__name__}: {err}"[:200])


async def read(client: httpx.AsyncClient, round_id: str, side: str) -> bool:
    """Read one reply to the end; True when it finished."""
    async with client.stream("GET", f"/api/rounds/{round_id}/{side}") as response:
        last = None
        async for line in response.aiter_lines():
            last = json.loads(line) if line else last
    return bool(last and "done" in last)


async def load(url: str, voters: int, rounds: int, duration_s: float) -> dict:
    results = {"failed": 0, "recorded": 0, "latencies": [], "errors": []}
    limits = httpx.Limits(max_connections=voters * 3)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.monotonic()
        await asyncio.gather(*(voter(client, started + duration_s, rounds, seed, results) for seed in range(voters)))
        elapsed = time.monotonic() - started
    latencies = np.array(results["latencies"]) if results["latencies"] else np.array([np.nan])
    return {"voters": voters, "elapsed_s": round(elapsed, 1), "rounds_voted": len(results["latencies"]),
            "rounds_failed": results["failed"], "votes_recorded": results["recorded"],
            "rounds_per_s": round(len(results["latencies"]) / elapsed, 2),
            "round_s_p50": round(float(np.percentile(latencies, 50)), 3),
            "round_s_p95": round(float(np.percentile(latencies, 95)), 3),
            "round_s_max": round(float(latencies.max()), 3), "errors": results["errors"][:5]}


def stub_model_app(tokens: int = 16, delay_s: float = 0.01):
    """An OpenAI-compatible server that streams `tokens` words, `delay_s` apart, for any model id."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        model = (await request.json())["model"]

        async def events():
            for i in range(tokens):
                await asyncio.sleep(delay_s)
                yield _chunk(model, {"content": f"word{i} "}, None)
            yield _chunk(model, {}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _chunk(model: str, delta: dict, finish: str | None) -> str:
    body = {"id": "stub", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


def serve_in_thread(app, port: int) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)


def serve_stub_arena(port: int, db: Path) -> None:
    """The arena on stub model servers, in this process until it is stopped (the --stub child)."""
    from components.arena import VoteStore, sqlite_url
    from infra.arena import Arena, Contestant, Settings, create_app
    from infra.serve import free_port

    model_port = free_port()
    serve_in_thread(stub_model_app(), model_port)
    base_url = f"http://127.0.0.1:{model_port}/v1"
    contestants = [Contestant(f"stub-{side}", "1", base_url, side) for side in "abc"]
    serve_in_thread(create_app(Arena(contestants, VoteStore(sqlite_url(db)), Settings(bootstrap_rounds=200))), port)
    threading.Event().wait()


@contextmanager
def stub_arena(db: Path):
    """A child process serving the arena on stub models: the voters' client does not share its interpreter."""
    from infra.serve import free_port

    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve-stub", str(port), "--db", str(db)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/api/settings").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        child.terminate()
        child.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running arena on this machine (127.0.0.1 / localhost only)")
    parser.add_argument("--stub", action="store_true", help="start an arena on stub model servers (a child process)")
    parser.add_argument("--voters", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20, help="most rounds per voter")
    parser.add_argument("--duration", type=float, default=60, help="seconds, at most")
    parser.add_argument("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        return serve_stub_arena(args.serve_stub, args.db)
    if not 1 <= args.voters <= MAX_VOTERS or not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--voters 1..{MAX_VOTERS}, --duration up to {MAX_DURATION_S} s: this test stays bounded")
    if args.stub == bool(args.url):
        parser.error("give --url or --stub")
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost"):
        parser.error("the load test only runs against this machine (127.0.0.1)")
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        db = Path(folder) / "votes.db"
        url = stack.enter_context(stub_arena(db)) if args.stub else args.url
        result = asyncio.run(load(url, args.voters, args.rounds, args.duration))
        if args.stub:
            from components.arena import VoteStore, sqlite_url

            result["votes_in_database"] = VoteStore(sqlite_url(db)).count()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
