"""The project's one cached chat client (components/openai_client.CachedChat) against a tiny OpenAI-compatible
endpoint made here with the standard library on a free loopback port: a cache hit sends nothing, what is and is
not in the request's digest, the API key on the wire and nowhere on disk, tokens and requests counted, and a
failed write that leaves no file behind."""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components import openai_client
from components.openai_client import CachedChat, Usage

KEY_ENV, KEY = "OPENAI_CLIENT_TEST_KEY", "sk-planted-must-not-be-written-7731"
HELLO = [{"role": "user", "content": "Say hello."}]
PROMPT_TOKENS, COMPLETION_TOKENS = 11, 3
SILENT_MODEL = "reports-no-usage"  # the endpoint leaves the token counts out for this model id


class Endpoint(BaseHTTPRequestHandler):
    """/v1/chat/completions: echoes the last message; every request it receives is kept in `server.seen`."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path != "/v1/chat/completions":
            return self.send_error(404)
        reply = {"role": "assistant", "content": f"echo: {body['messages'][-1]['content']}"}
        response = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "message": reply}]}
        if body["model"] != SILENT_MODEL:
            response["usage"] = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                                 "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
        data = json.dumps(response).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """Starts endpoints on free loopback ports: each call gives one's base_url and the requests it received."""
    servers = []

    def start() -> tuple[str, list[dict]]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
        server.seen = []
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()  # quick to stop
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/v1", server.seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_cache_hit_sends_nothing_and_both_are_counted(serve, tmp_path):
    base_url, seen = serve()
    chat = CachedChat(base_url, "tiny", None, tmp_path)
    first = chat.complete(HELLO, temperature=0.7, seed=1)
    again = CachedChat(base_url, "tiny", None, tmp_path).complete(HELLO, seed=1, temperature=0.7)  # any order

    assert len(seen) == 1 and seen[0]["body"] | {"messages": None} == {
        "model": "tiny", "messages": None, "temperature": 0.7, "seed": 1}
    assert (first.cached, again.cached) == (False, True) and first == again._replace(cached=False)
    assert again.text == "echo: Say hello." and again.finish_reason == "stop"
    assert chat.usage.requests == {"made": 1} and chat.usage.tokens == {
        "prompt": PROMPT_TOKENS, "completion": COMPLETION_TOKENS,
        "paid_prompt": PROMPT_TOKENS, "paid_completion": COMPLETION_TOKENS}

    chat.complete(HELLO, temperature=0.7, seed=1)
    chat.complete(HELLO, temperature=0.7, seed=2)  # another sampling setting, another request
    assert len(seen) == 2 and chat.usage.requests == {"made": 2, "cached": 1}
    assert chat.usage.tokens["prompt"] == 3 * PROMPT_TOKENS and chat.usage.tokens["paid_prompt"] == 2 * PROMPT_TOKENS


def test_the_file_is_named_by_the_sha256_of_the_canonical_request(serve, tmp_path):
    base_url, _ = serve()
    completion = CachedChat(base_url, "tiny", None, tmp_path, identity={"revision": "abc"}).complete(
        HELLO, max_tokens=5)
    request = {"model": "tiny", "messages": HELLO, "sampling": {"max_tokens": 5}, "revision": "abc"}
    canonical = json.dumps(request, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert completion.digest == hashlib.sha256(canonical.encode()).hexdigest()
    record = json.loads((tmp_path / f"{completion.digest}.json").read_text())
    assert record == {"request": request, "response": completion.response}
    assert [path.name for path in tmp_path.iterdir()] == [f"{completion.digest}.json"]


def test_the_address_is_in_the_digest_only_when_the_identity_says_so(serve, tmp_path):
    here, seen_here = serve()
    there, seen_there = serve()
    shared = Usage()  # one tally for several clients, as the preferences simulation keeps it
    CachedChat(here, "tiny", None, tmp_path, usage=shared).complete(HELLO)
    # the same model served at another address (and with a timeout, which is not in the digest): the same answer
    assert CachedChat(there, "tiny", None, tmp_path, timeout_s=30, usage=shared).complete(HELLO).cached
    assert (len(seen_here), len(seen_there)) == (1, 0)

    # a teacher's address is part of what it is: asked again at another address
    for base_url in (here, there):
        assert not CachedChat(base_url, "tiny", None, tmp_path, identity={"base_url": base_url},
                              usage=shared).complete(HELLO).cached
    revisions = [CachedChat(here, "tiny", None, tmp_path, identity={"revision": r}).complete(HELLO)
                 for r in ("abc", "def", "abc")]  # a retrained local model is asked again; the same one is not
    assert [r.cached for r in revisions] == [False, False, True]
    assert (len(seen_here), len(seen_there)) == (4, 1) and len(list(tmp_path.iterdir())) == 5
    assert shared.requests == {"made": 3, "cached": 1}

    with pytest.raises(ValueError, match=r"identity may not name \['model'\]"):
        CachedChat(here, "tiny", None, tmp_path, identity={"model": "other"})


def test_the_key_is_sent_and_never_written(serve, tmp_path, monkeypatch):
    base_url, seen = serve()
    monkeypatch.setenv(KEY_ENV, KEY)
    chat = CachedChat(base_url, "tiny", KEY_ENV, tmp_path)
    chat.complete(HELLO)
    chat.complete(HELLO)
    assert [request["auth"] for request in seen] == [f"Bearer {KEY}"]
    files = list(tmp_path.rglob("*"))
    assert files and not [path for path in files if KEY in path.read_text()]


def test_responses_without_token_counts_are_counted_apart(serve, tmp_path):
    base_url, _ = serve()
    chat = CachedChat(base_url, SILENT_MODEL, None, tmp_path)
    chat.complete(HELLO)
    chat.complete(HELLO)
    assert chat.usage.without_usage == 2 and chat.usage.requests == {"made": 1, "cached": 1}
    assert chat.usage.tokens.total() == 0


def test_a_failed_write_leaves_no_file_and_the_request_is_made_again(serve, tmp_path, monkeypatch):
    base_url, seen = serve()

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openai_client.os, "fsync", disk_full)  # fails after part of the record was written
    chat = CachedChat(base_url, "tiny", None, tmp_path)
    with pytest.raises(OSError, match="No space left"):
        chat.complete(HELLO)
    assert list(tmp_path.iterdir()) == [] and chat.usage.requests == {}

    monkeypatch.undo()
    completion = chat.complete(HELLO)
    assert not completion.cached and len(seen) == 2
    assert [path.name for path in tmp_path.iterdir()] == [f"{completion.digest}.json"]
