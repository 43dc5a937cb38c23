"""Votes → preference pairs in the `pairs` format the preferences stage reads (components/preferences/readers.py):
`prompt` as messages, `chosen`, `rejected`; plus `origin: arena` and the round, models and time, which the
reader ignores but a person auditing the data, or lineage, can follow back to the vote.

Only decisive votes make a pair: a tie or "both bad" says neither reply is better. A vote whose two replies are
the same, or one of them empty, makes none either: the preferences stage would refuse it.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from components.arena.store import Vote

ORIGIN = "arena"


def preference_record(vote: Vote) -> dict | None:
    """The pair `vote` makes, or None."""
    if vote.vote not in ("a", "b") or _skip_reason(vote):
        return None
    a_won = vote.vote == "a"
    chosen, rejected = (vote.reply_a, vote.reply_b) if a_won else (vote.reply_b, vote.reply_a)
    models = (vote.contestant_a, vote.contestant_b) if a_won else (vote.contestant_b, vote.contestant_a)
    return {"prompt": [{"role": "user", "content": vote.prompt}], "chosen": chosen, "rejected": rejected,
            "origin": ORIGIN, "round_id": vote.round_id, "chosen_model": models[0], "rejected_model": models[1],
            "voted_at": vote.created_at.isoformat()}


def write_pairs(votes: Iterable[Vote], out: Path) -> Counter:
    """Write the pairs as JSON Lines (whole, or the old file stays); returns how many votes made a pair and
    why the others did not."""
    tally: Counter = Counter()
    lines = []
    for vote in votes:
        record = preference_record(vote)
        tally["pairs" if record else _skip_reason(vote) or vote.vote] += 1
        if record:
            lines.append(json.dumps(record, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    partial.replace(out)
    return tally


def _skip_reason(vote: Vote) -> str | None:
    if not vote.reply_a.strip() or not vote.reply_b.strip():
        return "empty_reply"
    if vote.reply_a.strip() == vote.reply_b.strip():
        return "same_replies"
    return None
