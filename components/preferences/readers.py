"""Preference data in the formats people have → (prompt turns, chosen turn, rejected turn), as found in a record.

Files, JSON Lines or arrays, and bad records are handled as for instruction data (components/sft_data/readers.py:
`BadRecord` with a short reason for one record, which the stage raises or counts). The turns are checked and
made into a `Pair` by components/preferences/pairs.py.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from itertools import combinations
from typing import Any

from components.sft_data.readers import BadRecord, Turns, live_replies, messages, text_field, turn_list

RawPair = tuple[Turns, tuple[Any, Any], tuple[Any, Any]]  # prompt turns, chosen turn, rejected turn

# HH-RLHF writes a conversation as "\n\nHuman: ...\n\nAssistant: ...": a blank line, then the speaker
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def hh_rlhf(record: dict) -> Iterator[RawPair]:
    """Two full transcripts that must share everything but the last reply: that is the prompt."""
    chosen, rejected = (_transcript(record, side) for side in ("chosen", "rejected"))
    if _stripped(chosen[:-1]) != _stripped(rejected[:-1]):
        raise BadRecord("prompts_differ", "the 'chosen' and 'rejected' transcripts differ before their last turn")
    yield chosen[:-1], chosen[-1], rejected[-1]


def _transcript(record: dict, side: str) -> Turns:
    parts = HH_TURN.split(text_field(record, side))
    if len(parts) < 3 or parts[0].strip():
        raise BadRecord("transcript_shape", f"{side!r} is not a transcript of '\\n\\nHuman: ' and "
                                            f"'\\n\\nAssistant: ' turns")
    return [(speaker.lower(), text) for speaker, text in zip(parts[1::2], parts[2::2])]


def _stripped(turns: Turns) -> Turns:
    return [(role, text.strip()) for role, text in turns]


def pairs(record: dict) -> Iterator[RawPair]:
    """The DPO format: `prompt` (a string, or a list of {role, content}) or ShareGPT `conversations` / OpenAI
    `messages` as the prompt; `chosen` and `rejected` replies."""
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        turns = [("user", prompt)]
    elif prompt is not None:
        turns = turn_list(prompt, "prompt", "role", "content")
    elif "conversations" in record or "messages" in record:
        turns = next(messages(record))
    else:
        raise BadRecord("missing_field", "no 'prompt', 'conversations' (ShareGPT) or 'messages' (OpenAI) field")
    yield turns, _reply(record, "chosen"), _reply(record, "rejected")


def _reply(record: dict, key: str) -> tuple[Any, Any]:
    """A string, a message object ({role, content} or {from, value}) or a list of one (TRL's conversational
    format) → (role, content)."""
    value = record.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str):
        return "assistant", value
    if isinstance(value, dict):
        return (value["role"], value.get("content")) if "role" in value else (value.get("from"), value.get("value"))
    raise BadRecord("missing_field", f"{key!r} is not a reply: a string, a message object or a list of one")


def oasst(tree: dict, max_pairs_per_prompt: int | None = None) -> Iterator[RawPair]:
    """An OpenAssistant message tree → for every prompt path (every live branch down to a prompter message), each
    two of its ranked live assistant replies as (better, worse), the widest rank gaps first, at most
    `max_pairs_per_prompt` of them."""
    root = tree.get("prompt")
    if not isinstance(root, dict):
        raise BadRecord("missing_field", "no 'prompt' message (not an OpenAssistant message tree?)")
    yield from _sibling_pairs(root, [], max_pairs_per_prompt)


def _sibling_pairs(node: dict, history: Turns, cap: int | None) -> Iterator[RawPair]:
    turns = [*history, (node.get("role"), node.get("text"))]
    replies = live_replies(node.get("replies") or [])
    if node.get("role") == "prompter":
        ranked = sorted((r for r in replies if r.get("rank") is not None), key=lambda reply: reply["rank"])
        # the widest rank gap first: the surest preference (equal ranks are none); ties keep the rank order
        ordered = sorted(((b, w) for b, w in combinations(ranked, 2) if b["rank"] < w["rank"]),
                         key=lambda pair: pair[0]["rank"] - pair[1]["rank"])
        for better, worse in ordered[:cap]:
            yield turns, (better.get("role"), better.get("text")), (worse.get("role"), worse.get("text"))
    for reply in replies:
        yield from _sibling_pairs(reply, turns, cap)


FORMATS: dict[str, Callable[..., Iterator[RawPair]]] = {"hh_rlhf": hh_rlhf, "pairs": pairs, "oasst": oasst}
