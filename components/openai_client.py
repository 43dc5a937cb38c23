"""One client for every OpenAI-compatible endpoint the project talks to: its own served models (`llm-lifecycle
serve`), a self-instruct teacher, an LLM judge.

The API key is never a parameter: callers name the environment variable that holds it (`api_key_env`), and
it goes only into the request's Authorization header.
"""
from __future__ import annotations

import os
from functools import lru_cache

NO_KEY = "none"  # what a local server gets: it checks no key, but the openai client refuses to start without one


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
