"""Chat completions that a rerun does not pay for: each request to an OpenAI-compatible endpoint
(components/openai_client) is kept on disk, one JSON file named by the digest of the request, with the reply
and the whole response.

The digest covers what decides the reply: the model id, its revision when known (the digest of a local model
folder, so a retrained model at the same path is asked again), the messages and every sampling setting. It
leaves out the endpoint's address (the same model served on another port is the same model) and the API key,
which is read from the environment by the client and never written.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from components.preferences.params import Endpoint
from components.sft_data.examples import canonical, content_digest


class Completion(NamedTuple):
    text: str  # the reply as the model wrote it
    digest: str  # the request's digest: its file in the cache
    cached: bool


class CachedChat:
    def __init__(self, folder: Path, revisions: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.revisions = revisions or {}  # model id → digest of what it serves (local folders)
        self.counts: Counter = Counter()  # requests "made" and answered from the cache ("cached")
        self._lock = threading.Lock()

    def complete(self, endpoint: Endpoint, messages: list[dict], **sampling) -> Completion:
        """The endpoint's reply to `messages`, sampled with the endpoint's temperature and token budget and
        `sampling` (e.g. seed); from the cache when this exact request was made before."""
        sampling = {"temperature": endpoint.temperature, "max_tokens": endpoint.max_tokens, **sampling}
        request = {"model": endpoint.model, "revision": self.revisions.get(endpoint.model), "messages": messages,
                   **sampling}
        digest = content_digest(canonical(request))
        path = self.folder / digest[:2] / f"{digest}.json"
        if path.exists():
            self._count("cached")
            return Completion(json.loads(path.read_text())["reply"], digest, True)
        from components.openai_client import chat_completion

        response = chat_completion(endpoint.base_url, endpoint.model, messages, endpoint.api_key_env,
                                   timeout=endpoint.timeout_s, **sampling)
        reply = response.choices[0].message.content or ""
        _write_atomically(path, {"request": request, "reply": reply, "response": response.model_dump(mode="json")})
        self._count("made")
        return Completion(reply, digest, False)

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1


def _write_atomically(path: Path, record: dict) -> None:
    """A kill mid-write leaves no half file that a rerun would take for an answer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1))
    tmp.replace(path)
