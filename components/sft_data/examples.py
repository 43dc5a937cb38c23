"""Every conversation in one shape: `messages`, a list of {role: system | user | assistant, content}, contents
stripped, turns in the order chat models train on; and an id that only the source and the messages decide."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol

from components.sft_data.readers import BadRecord, Turns

# The roles of each format, in the chat template's names.
ROLES = {"system": "system", "user": "user", "assistant": "assistant",
         "human": "user", "gpt": "assistant",  # ShareGPT
         "prompter": "user"}  # OpenAssistant


class Record(Protocol):
    """What deduplication, decontamination and the drop reports need of an item: an example, a preference pair."""

    id: str
    source: str

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Example:
    id: str
    source: str
    messages: list[dict]

    @property
    def text(self) -> str:
        """All contents: what deduplication and decontamination compare."""
        return "\n".join(message["content"] for message in self.messages)


def normalise(turns: Turns) -> list[dict]:
    """Turns as found in a record → messages; BadRecord names the first problem."""
    messages = []
    for role, content in turns:
        if role not in ROLES:
            raise BadRecord("unknown_role", f"unknown role {role!r}; known: {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise BadRecord("missing_field", f"a {role} turn has no string content")
        if not content.strip():
            raise BadRecord("empty_content", f"a {role} turn is empty")
        messages.append({"role": ROLES[role], "content": content.strip()})
    if problem := order_problem([message["role"] for message in messages]):
        raise BadRecord("turn_order", problem)
    return messages


def order_problem(roles: list[str]) -> str | None:
    """What is wrong with the order of the roles, or None: an optional system turn first, then user and
    assistant alternating, starting with the user and ending with the assistant (the last reply is what a
    conversation trains)."""
    body = roles[1:] if roles[:1] == ["system"] else roles
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if not body or body != expected[:len(body)] or body[-1] != "assistant":
        return (f"turns must be an optional system turn, then user and assistant alternating, ending with the "
                f"assistant; got {', '.join(roles) or 'none'}")
    return None


def example_id(source: str, messages: list[dict]) -> str:
    """`<source>/<16 hex>`: the same conversation from the same source always gets the same id."""
    return f"{source}/{content_digest(source, canonical(messages))}"


def canonical(value) -> str:
    """The JSON text of `value` that key order and formatting cannot change."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def content_digest(*parts: str) -> str:
    """16 hex digits that only `parts` decide."""
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=8).hexdigest()
