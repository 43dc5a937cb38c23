"""Chat completions that a rerun does not pay for: the simulation's policy and judge requests, through the
project's one cached client (components/openai_client.CachedChat), all kept in one folder.

The digest covers what decides the reply: the model id, its revision when known (the digest of a local model
folder, so a retrained model at the same path is asked again), the messages and every sampling setting. It
leaves out the endpoint's address (the same model served on another port is the same model: `llm-lifecycle
serve` picks a free port each time) and the API key, which is read from the environment by the client and never
written.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from components import openai_client
from components.openai_client import Completion, Usage
from components.preferences.params import Endpoint

__all__ = ["CachedChat", "Completion"]


class CachedChat:
    """The requests to any of the simulation's endpoints, cached in `folder` and counted together."""

    def __init__(self, folder: Path, revisions: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.revisions = revisions or {}  # model id → digest of what it serves (local folders)
        self.usage = Usage()

    @property
    def counts(self) -> Counter:
        """Requests "made" and answered from the cache ("cached")."""
        return self.usage.requests

    def complete(self, endpoint: Endpoint, messages: list[dict], **sampling) -> Completion:
        """The endpoint's reply to `messages`, sampled with the endpoint's temperature and token budget and
        `sampling` (e.g. seed); from the cache when this exact request was made before."""
        client = openai_client.CachedChat(endpoint.base_url, endpoint.model, endpoint.api_key_env, self.folder,
                                          identity={"revision": self.revisions.get(endpoint.model)},
                                          timeout_s=endpoint.timeout_s, usage=self.usage)
        return client.complete(messages, **{"temperature": endpoint.temperature, "max_tokens": endpoint.max_tokens,
                                            **sampling})
