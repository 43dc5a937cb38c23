"""One client for every OpenAI-compatible endpoint the project talks to: its own served models (`llm-lifecycle
serve`), a self-instruct teacher, an LLM judge.

The API key is never a parameter: callers name the environment variable that holds it (`api_key_env`), and
it goes only into the request's Authorization header.

`CachedChat` is the one on-disk cache of chat completions (the teacher, the judge and the simulated preference
pairs use it): a rerun pays only for requests not made before.
- One JSON file per request, `cache_dir/<sha256>.json`, holding {"request", "response"}; the digest is the
  sha256 of the request's canonical JSON: {"model", "messages", "sampling", **identity}. The endpoint's address
  is not in it: the same model served on another port is the same model. What else decides the reply is the
  caller's `identity`: {"base_url": ...} where one model id names different models at different providers,
  {"revision": <folder digest>} where a local model folder may be retrained under the same path.
- The API key is read from the environment by `chat_completion` and written nowhere: not in the request, not in
  the response.
- A file is written whole or not at all (temporary file, fsync, rename): a run killed mid-write leaves no half
  file that the next run would take for an answer.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

NO_KEY = "none"  # what a local server gets: it checks no key, but the openai client refuses to start without one
KEYED_FIELDS = ("model", "messages", "sampling")  # an identity naming one of them would overwrite it


def chat_completion(base_url: str, model: str, messages: list[dict], api_key_env: str | None = None, **sampling):
    """`client.chat.completions.create` at `base_url` (ending in /v1): a `ChatCompletion`, or with `stream=True`
    an iterator of chunks. `sampling`: `max_tokens`, `temperature`, `top_p`, `seed`, `stream`, `timeout`, ... as
    the openai client takes them. `api_key_env`: the variable holding the key; None for a server that needs none."""
    return _client(base_url, api_key_env).chat.completions.create(model=model, messages=messages, **sampling)


@lru_cache(maxsize=16)  # one connection pool per endpoint, not one per request
def _client(base_url: str, api_key_env: str | None):
    from openai import OpenAI

    key = os.environ.get(api_key_env) if api_key_env else NO_KEY
    if not key:
        raise RuntimeError(f"the API key for {base_url} is read from ${api_key_env}, which is not set")
    return OpenAI(base_url=base_url, api_key=key)


class Completion(NamedTuple):
    response: dict  # the endpoint's response as JSON, as first received
    digest: str  # the request's sha256: its file in the cache
    cached: bool  # answered from the cache: no request was made

    @property
    def text(self) -> str:
        return self.response["choices"][0]["message"]["content"] or ""

    @property
    def finish_reason(self) -> str | None:
        return self.response["choices"][0]["finish_reason"]


@dataclass
class Usage:
    """What the requests of one or more clients were and cost; updated from many threads."""

    requests: Counter = field(default_factory=Counter)  # "made" (cache misses, sent) and "cached" (hits)
    # "prompt", "completion": the tokens of every response, cached ones too (what the data cost);
    # "paid_prompt", "paid_completion": those of the responses received now (what this run cost)
    tokens: Counter = field(default_factory=Counter)
    without_usage: int = 0  # responses whose endpoint reported no token counts (not in the tokens)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completion: Completion) -> None:
        usage = completion.response.get("usage") or {}
        with self._lock:
            self.requests["cached" if completion.cached else "made"] += 1
            self.without_usage += not usage
            for kind in ("prompt", "completion"):
                tokens = usage.get(f"{kind}_tokens") or 0
                self.tokens[kind] += tokens
                self.tokens[f"paid_{kind}"] += 0 if completion.cached else tokens


class CachedChat:
    """`model` at the OpenAI-compatible `base_url`, every response kept in `cache_dir` by its request's digest.

    `identity`: what else decides the reply and goes into the digest (see the module's docstring); `timeout_s`:
    per request, not in the digest; `usage`: the tally to count into (one of its own by default), for callers
    whose clients share one."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None, cache_dir: Path,
                 identity: dict | None = None, timeout_s: float | None = None, usage: Usage | None = None):
        self.identity = identity or {}
        if overwritten := set(self.identity) & set(KEYED_FIELDS):
            raise ValueError(f"identity may not name {sorted(overwritten)}: they are in every request already")
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.cache_dir = Path(cache_dir)
        self.options = {"timeout": timeout_s} if timeout_s else {}  # sent, not keyed; else the openai default
        self.usage = usage if usage is not None else Usage()

    def complete(self, messages: list[dict], **sampling) -> Completion:
        """The reply to `messages` sampled with `sampling` (temperature, max_tokens, seed, stop, ...: all of it
        in the digest), from the cache when this exact request was made before."""
        request = {"model": self.model, "messages": messages, "sampling": sampling, **self.identity}
        digest = _request_digest(request)
        path = self.cache_dir / f"{digest}.json"
        if path.exists():
            completion = Completion(json.loads(path.read_text(encoding="utf-8"))["response"], digest, True)
        else:
            response = chat_completion(self.base_url, self.model, messages, self.api_key_env, **sampling,
                                       **self.options).model_dump(mode="json")
            _write_atomically(path, {"request": request, "response": response})
            completion = Completion(response, digest, False)
        self.usage.add(completion)
        return completion


def _request_digest(request: dict) -> str:
    """The sha256 of the request's canonical JSON: neither key order nor formatting changes it."""
    from components.sft_data.examples import canonical  # here: sft_data imports this module, and is heavy

    return hashlib.sha256(canonical(request).encode()).hexdigest()


def _write_atomically(path: Path, record: dict) -> None:
    """`record` as JSON at `path`, whole or not at all: written to a temporary file beside it, flushed to disk,
    then renamed over it (a rename within a folder is atomic). A failed write removes its temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(record, file, ensure_ascii=False)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
