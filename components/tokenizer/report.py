"""What a trained tokenizer does to held-out text: compression per group, how it splits digits and
whitespace, its longest merges, and how much of its vocabulary the text uses.

`report` is pure: it reads the folder and the texts and returns the numbers with a markdown rendering
("markdown"), which the caller writes as report.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from components.tokenizer.train import SPECIAL_TOKENS, load

DIGIT_EXAMPLES = ["1234567", "In 2024, 3.14159 of $1,000,000", "2024-11-28 07:58:00"]
WHITESPACE_EXAMPLES = ["def f(x):\n    if x:\n        return x\n", "\tindented\t\ttabs",
                       "a\n\n\nb  c          d"]
LONGEST_MERGES = 50


def report(folder: Path, heldout: dict[str, dict[str, list[str]]]) -> dict:
    """`heldout` maps a grouping ("source", "domain", ...) to its groups' document texts; every grouping
    holds the same documents, so the overall numbers come from the first one."""
    tokenizer = load(folder)
    groups, used = {}, set()
    for grouping, texts_by_group in heldout.items():
        groups[grouping] = []
        for name, texts in texts_by_group.items():
            encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
            for encoding in encodings:
                used.update(encoding.ids)
            groups[grouping].append(_compression(name, texts, sum(len(e.ids) for e in encodings)))
    vocab = tokenizer.get_vocab_size()
    data = {
        "groups": groups,
        "all": _total(next(iter(groups.values()), [])),
        "vocab_size": vocab,
        # Tokens never seen in held-out text are embedding rows the model will barely train: a vocabulary
        # too large for the data shows up here.
        "vocab_coverage": len(used) / vocab,
        "unused_tokens": vocab - len(used),
        "digit_examples": {text: _pieces(tokenizer, text) for text in DIGIT_EXAMPLES},
        "whitespace_examples": {text: _pieces(tokenizer, text) for text in WHITESPACE_EXAMPLES},
        "longest_merges": _longest_merges(tokenizer, LONGEST_MERGES),
    }
    return data | {"markdown": markdown(data)}


def _compression(name: str, texts: list[str], tokens: int) -> dict:
    chars = sum(len(text) for text in texts)
    size = sum(len(text.encode()) for text in texts)
    return {"group": name, "docs": len(texts), "chars": chars, "bytes": size, "tokens": tokens,
            "bytes_per_token": size / max(tokens, 1), "chars_per_token": chars / max(tokens, 1)}


def _total(groups: list[dict]) -> dict:
    sums = {key: sum(group[key] for group in groups) for key in ("docs", "chars", "bytes", "tokens")}
    return {"group": "all", **sums, "bytes_per_token": sums["bytes"] / max(sums["tokens"], 1),
            "chars_per_token": sums["chars"] / max(sums["tokens"], 1)}


def _pieces(tokenizer: Tokenizer, text: str) -> list[str]:
    """The text's tokens as text (a token that ends inside a UTF-8 character shows U+FFFD)."""
    return [tokenizer.decode([token]) for token in tokenizer.encode(text, add_special_tokens=False).ids]


def _longest_merges(tokenizer: Tokenizer, count: int) -> list[dict]:
    """The merges that make the longest tokens (in bytes: a ByteLevel token has one character per byte)."""
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    ranked = sorted(enumerate(merges), key=lambda item: (-len(item[1][0] + item[1][1]), item[0]))

    def as_text(token: str) -> str:
        return tokenizer.decode([tokenizer.token_to_id(token)])

    return [{"rank": rank, "token": as_text(left + right), "bytes": len(left + right),
             "from": [as_text(left), as_text(right)]} for rank, (left, right) in ranked[:count]]


def markdown(data: dict) -> str:
    lines = ["# Tokenizer report", "",
             f"Vocabulary: {data['vocab_size']} tokens ({len(SPECIAL_TOKENS)} special); held-out text uses "
             f"{data['vocab_coverage']:.1%} of them ({data['unused_tokens']} never occur).", "",
             "## Compression on held-out documents"]
    for grouping, rows in data["groups"].items():
        lines += ["", f"| {grouping} | docs | chars | bytes | tokens | bytes/token | chars/token |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {row['group']} | {row['docs']} | {row['chars']} | {row['bytes']} | {row['tokens']} "
                  f"| {row['bytes_per_token']:.2f} | {row['chars_per_token']:.2f} |" for row in [*rows, data["all"]]]
    for title, key in [("Digits (groups of at most 3)", "digit_examples"),
                       ("Whitespace (runs kept together)", "whitespace_examples")]:
        lines += ["", f"## {title}", ""]
        lines += [f"- `{_quote(text)}` → `{_quote(pieces)}`" for text, pieces in data[key].items()]
    lines += ["", f"## The {len(data['longest_merges'])} longest merges", "",
              "| rank | token | bytes | from |", "| ---: | --- | ---: | --- |"]
    lines += [f"| {m['rank']} | `{_quote(m['token'])}` | {m['bytes']} | `{_quote(m['from'])}` |"
              for m in data["longest_merges"]]
    return "\n".join(lines) + "\n"


def _quote(value: str | list[str]) -> str:
    """JSON quoting shows spaces, tabs and newlines; backticks and pipes would break the markdown."""
    return json.dumps(value, ensure_ascii=False).replace("`", "\\u0060").replace("|", "\\u007c")
