"""Self-instruct against a real teacher: the project's tiny model (random weights, test_serve's folder) behind
`transformers serve` on a free loopback port, asked with Alpaca's prompt and seed tasks. Its replies are junk that
the filters drop: what is checked is the plumbing — requests made, tokens counted, responses cached, a rerun that
sends no request at all (the server's log says so too), and no API key in anything written."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

for _var in ("DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

from components import openai_client
from components.ingest.params import Source
from components.sft_data.params import SyntheticParams
from components.sft_data.selfinstruct import DROP_REASONS, generate
from infra import serve
from tasks.dag import Workspace
from tests.integration.test_serve import model_dir  # noqa: F401 (a fixture: the tiny chat model folder)

REQUESTS = 2
KEY_ENV, KEY = "SELFINSTRUCT_TEST_KEY", "sk-planted-0123456789"  # a local server checks no key; it must go nowhere
POSTED = '"POST /v1/chat/completions HTTP/1.1"'  # the server's access log: one line per HTTP request


@pytest.fixture
def teacher(model_dir, tmp_path, monkeypatch):  # noqa: F811
    """The tiny model served from a workspace of its own; its server record, stopped after the test."""
    monkeypatch.setenv("LLM_LIFECYCLE_WORKSPACE", str(tmp_path))
    model = serve.resolve(str(model_dir), Workspace(tmp_path))
    server = serve.start(model, port=serve.free_port(), name="teacher", timeout_s=120)
    try:
        yield server
    finally:
        serve.stop("teacher")


@pytest.mark.serve
def test_the_served_model_as_teacher_pays_once(teacher, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    sent, real = [], openai_client.chat_completion
    monkeypatch.setattr(openai_client, "chat_completion", lambda *a, **kw: sent.append(kw) or real(*a, **kw))
    params = SyntheticParams(
        enabled=True, base_url=teacher["base_url"], model=teacher["model"], api_key_env=KEY_ENV,
        seed_tasks=Source(uri=str(data_dir / "sft/stanford_alpaca/seed_tasks.jsonl")),
        prompt=Source(uri=str(data_dir / "sft/stanford_alpaca/prompt.txt")),
        num_instructions=5, max_requests=REQUESTS, concurrency=1, max_tokens=32)
    cache = tmp_path / "cache"

    first = generate(params, tmp_path / "first.jsonl", cache, progress=False).summary(params)
    assert len(sent) == REQUESTS and first["requests"] == {"made": REQUESTS, "cached": 0}
    assert first["tokens"]["prompt"] > 1000 * REQUESTS  # Alpaca's prompt and three seed tasks, each time
    assert 0 < first["tokens"]["completion"] <= params.max_tokens * REQUESTS
    assert first["tokens"] == first["tokens_paid"] and first["replies_without_usage"] == 0
    # a random model's words pass no filter, or pass them all: either way every task is accounted for
    assert first["tasks"]["candidates"] == first["tasks"]["accepted"] + sum(
        first["dropped"][reason] for reason in DROP_REASONS[2:])
    files = sorted(cache.glob("*.json"))
    assert len(files) == REQUESTS
    for file in files:
        record = json.loads(file.read_text())
        assert record["request"]["base_url"] == teacher["base_url"] and record["response"]["usage"]["prompt_tokens"]

    log = Path(teacher["log"]).read_text
    assert log().count(POSTED) == REQUESTS, log()[-3000:]

    second = generate(params, tmp_path / "second.jsonl", cache, progress=False).summary(params)
    assert len(sent) == REQUESTS and log().count(POSTED) == REQUESTS  # nothing reached the server
    assert second["requests"] == {"made": 0, "cached": REQUESTS} and second["tokens_paid"] == {"prompt": 0,
                                                                                              "completion": 0}
    assert {k: v for k, v in second.items() if k not in ("requests", "tokens_paid", "cost_usd_paid")} == {
        k: v for k, v in first.items() if k not in ("requests", "tokens_paid", "cost_usd_paid")}
    assert (tmp_path / "second.jsonl").read_text() == (tmp_path / "first.jsonl").read_text()
    print(json.dumps(first, indent=1))  # what the tiny teacher produced, for the record

    written = [*cache.iterdir(), tmp_path / "first.jsonl", tmp_path / "second.jsonl", Path(teacher["log"])]
    assert not any(KEY in path.read_text() for path in written)
