"""Instruction data in the formats people have → conversations as (role, content) turns, with where each came from.

Files are JSON arrays or JSON Lines whatever their suffix (the first character decides), read through fsspec
like the curated sources (local paths and globs, s3://, https://; .gz/.bz2/... decompressed by name).

Bad input, two levels:
- a file that is not JSON at all (its first record does not parse), a JSON array that breaks off, or a JSON
  value that is neither an array nor records: `BadFile`, which always stops the stage: nothing in the file
  can be trusted, or nothing after the break can be located;
- one record that cannot become an example (a malformed JSON line, a missing field, an unknown role, turns out
  of order, an OpenAssistant prompt nobody answered): `BadRecord` with a short reason, which the stage either
  raises or counts and reports (`on_bad_record`). Nothing is skipped silently.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any

Turns = list[tuple[Any, Any]]  # (role, content) as found in the record; checked by examples.normalise

_WHITESPACE = re.compile(r"\s*")


class BadRecord(ValueError):
    """One record cannot become an example; `reason` is the short name it is counted under."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class BadFile(ValueError):
    """The file cannot be read as records at all (from `where` on: "line 12")."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where


def json_records(file) -> Iterator[tuple[int, Any]]:
    """(line, record) of a JSON array (the line each element starts on) or of a JSON Lines file. A malformed
    line of a JSON Lines file comes as (line, BadRecord), so the caller decides; the first one means the file
    is not JSON, and raises BadFile."""
    lines = enumerate(file, 1)
    for number, first in lines:
        if first.strip():
            break
    else:
        return  # an empty file has no records
    if first.lstrip().startswith("["):
        text = "\n" * (number - 1) + first + "".join(line for _, line in lines)
        yield from _array_records(text)
        return
    for count, (number, line) in enumerate(chain([(number, first)], lines)):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as error:
            if count == 0:
                raise BadFile(f"line {number}", f"not JSON: neither an array nor JSON Lines (one object per line): {error.msg}") from None
            yield number, BadRecord("malformed_json", f"malformed JSON line: {error.msg} (column {error.colno})")


def _array_records(text: str) -> Iterator[tuple[int, Any]]:
    """The elements of one JSON array, decoded one at a time so that each knows its line."""
    decoder = json.JSONDecoder()
    position = _WHITESPACE.match(text, text.index("[") + 1).end()
    line = 1 + text.count("\n", 0, position)
    if text.startswith("]", position):
        return
    while True:
        try:
            record, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            message = f"JSON array breaks off: {error.msg} (column {error.colno})"
            raise BadFile(f"line {error.lineno}", message) from None
        yield line, record
        after = _WHITESPACE.match(text, end).end()
        if text.startswith("]", after):
            return
        if not text.startswith(",", after):
            line_there = 1 + text.count("\n", 0, after)
            raise BadFile(f"line {line_there}", "JSON array breaks off: expected ',' or ']' after an element")
        next_start = _WHITESPACE.match(text, after + 1).end()
        line += text.count("\n", position, next_start)
        position = next_start


# --- formats: one record → its conversations -----------------------------------------------------------------

def alpaca(record: dict) -> Iterator[Turns]:
    """`instruction` (+ `input` after a blank line when non-empty) → `output`; with self-instruct's
    `instances: [{input, output}]`, one conversation per instance."""
    instruction = text_field(record, "instruction")
    for pair in _instances(record):
        prompt = instruction
        if (extra := text_field(pair, "input", required=False)).strip():
            prompt = f"{instruction}\n\n{extra}"
        yield [("user", prompt), ("assistant", text_field(pair, "output"))]


def _instances(record: dict) -> list[dict]:
    if "instances" not in record:
        return [record]
    instances = record["instances"]
    if not isinstance(instances, list) or not instances or not all(isinstance(i, dict) for i in instances):
        raise BadRecord("missing_field", "'instances' is not a non-empty list of objects")
    return instances


def messages(record: dict) -> Iterator[Turns]:
    """OpenAI `messages: [{role, content}]` or ShareGPT `conversations: [{from, value}]`."""
    for key, role, content in (("messages", "role", "content"), ("conversations", "from", "value")):
        if key in record:
            yield turn_list(record[key], key, role, content)
            return
    raise BadRecord("missing_field", "no 'messages' (OpenAI) or 'conversations' (ShareGPT) list")


def turn_list(turns, key: str, role: str, content: str) -> Turns:
    """A record's list of turn objects (field `key`) → (role, content) turns, read from those two fields."""
    if not isinstance(turns, list) or not all(isinstance(turn, dict) for turn in turns):
        raise BadRecord("missing_field", f"{key!r} is not a list of objects")
    return [(turn.get(role), turn.get(content)) for turn in turns]


def oasst(tree: dict) -> Iterator[Turns]:
    """An OpenAssistant message tree → the conversation along the best reply at every turn (the lowest
    `rank` among the live replies that have one, else the first live reply; deleted messages and those that
    failed review are never taken), up to its last assistant reply: a question nobody answered trains nothing."""
    node = tree.get("prompt")
    if not isinstance(node, dict):
        raise BadRecord("missing_field", "no 'prompt' message (not an OpenAssistant message tree?)")
    turns = []
    while node is not None:
        turns.append((node.get("role"), node.get("text")))
        node = _best_reply(node.get("replies") or [])
    while turns and turns[-1][0] != "assistant":
        turns.pop()
    if not turns:
        raise BadRecord("no_reply", "the prompt has no live assistant reply")
    yield turns


def _best_reply(replies: list) -> dict | None:
    live = live_replies(replies)
    ranked = [r for r in live if r.get("rank") is not None]
    if ranked:
        return min(ranked, key=lambda reply: reply["rank"])
    return live[0] if live else None


def live_replies(replies: list) -> list[dict]:
    """The OpenAssistant replies that count: not deleted, not failed in review."""
    return [r for r in replies if isinstance(r, dict) and not r.get("deleted") and r.get("review_result") is not False]


def text_field(record: dict, key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BadRecord("missing_field", f"no string {key!r} field")
    return value


FORMATS: dict[str, Callable[[dict], Iterator[Turns]]] = {"alpaca": alpaca, "messages": messages, "oasst": oasst}
