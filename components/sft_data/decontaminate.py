"""Keep evaluation items out of the instruction data: word n-gram overlap, as GPT-3 (Brown et al. 2020, appendix
C) and open-instruct do it.

Method:
- Text is compared as words of `components.clean.dedup.normalise` (lower case, NFKC, punctuation removed,
  whitespace collapsed), the normalisation the deduplication uses.
- Each evaluation set gets its own n: the 5th percentile (`length_percentile`) of its items' lengths in words,
  clamped to [8, 13] (`min_n`, `max_n`): 13-grams where items are long, shorter where they are short, so that
  a copied short question still collides.
- An item shorter than its set's n matches as a whole: the example must contain its whole word sequence.
  Items shorter than `min_item_words` (AlpacaEval has 'Write "Test"') are not matched at all and are counted
  in the manifest: as whole sequences they would hit unrelated examples ("write test cases for ...").
- An example (all its turns' contents) is contaminated when it shares one n-gram with any item; it is dropped,
  and the report names the evaluation set, the item (its file and line, row or item number) and
  the n-gram.

Speed: each n-gram is a 64-bit hash (a weighted sum of word hashes); the evaluation side is one sorted array
per n-gram length, and an example is looked up with one vectorised `searchsorted` per length. Measured on 2
cores: the tiny preset's 22k evaluation items (1.0M n-grams, 12 MB) index in 1.7 s; an Alpaca-sized example
costs ~0.6 ms (52k examples: ~30 s).
"""
from __future__ import annotations

import csv
import functools
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np

from components.clean.dedup import normalise
from components.curated import _open_files
from components.sft_data.params import DecontaminationParams, EvalSet
from components.sft_data.readers import BadFile, json_records

HELLASWAG_LINES = 6  # "activity: context", the label, four endings


class Contamination(NamedTuple):
    eval_set: str
    eval_item: str
    ngram: str


class EvalItem(NamedTuple):
    id: str  # "<file> line N" (json), "<file> row N" (csv), "<file> item N" (hellaswag)
    text: str


class Decontaminator:
    """The n-grams of every evaluation item; `match(text)` finds the first one an example shares."""

    def __init__(self, eval_sets: dict[str, list[EvalItem]], params: DecontaminationParams):
        self.owners: list[tuple[str, str]] = []  # (eval set, item id) per indexed item
        self.stats: dict[str, dict] = {}  # per eval set: items, n, items too short to match
        grams: dict[int, list[tuple[np.ndarray, int]]] = {}  # n-gram length → (hashes, owner) per item
        for name, items in eval_sets.items():
            words = [normalise(item.text).split() for item in items]
            n = ngram_size([len(w) for w in words], params)
            short = 0
            for item, item_words in zip(items, words):
                if len(item_words) < params.min_item_words:
                    short += 1
                    continue
                size = min(n, len(item_words))
                grams.setdefault(size, []).append((ngram_hashes(item_words, size), len(self.owners)))
                self.owners.append((name, item.id))
            self.stats[name] = {"items": len(items), "n": n, "unmatched_short_items": short}
        self.index = {size: _sorted_index(entries) for size, entries in sorted(grams.items(), reverse=True)}

    def match(self, text: str) -> Contamination | None:
        """The first evaluation n-gram in `text` (longest n-gram length first), or None when it is clean."""
        words = normalise(text).split()
        for size, (keys, owners) in self.index.items():
            hashes = ngram_hashes(words, size)
            if not len(hashes):
                continue
            at = np.minimum(np.searchsorted(keys, hashes), len(keys) - 1)
            hits = np.flatnonzero(keys[at] == hashes)
            if len(hits):
                first = int(hits[0])
                eval_set, item = self.owners[owners[at[first]]]
                return Contamination(eval_set, item, " ".join(words[first:first + size]))
        return None


def ngram_size(lengths: list[int], params: DecontaminationParams) -> int:
    """GPT-3's n for one evaluation set: a low percentile of its item lengths, clamped."""
    if not lengths:
        return params.max_n
    return int(np.clip(int(np.percentile(lengths, params.length_percentile)), params.min_n, params.max_n))


@functools.cache
def _weights(size: int) -> np.ndarray:
    # Odd, fixed 64-bit weights: the hash of an n-gram is sum(weight[j] * word_hash[j]) mod 2**64. The
    # deduplication's shingle hashes keep 32 bits, too few here: against the tiny preset's 1M evaluation
    # n-grams, a 300-word example would collide by chance ~7% of the time.
    return np.random.default_rng(size).integers(0, 2**64, size, dtype=np.uint64) | np.uint64(1)


def ngram_hashes(words: list[str], size: int) -> np.ndarray:
    """64-bit hashes of the consecutive `size`-word sequences of `words`, in order (empty if fewer words).
    Python's string hash is salted per process, so index and lookups must share one process (they do)."""
    count = len(words) - size + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    word_hashes = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
    mixed = np.zeros(count, dtype=np.uint64)
    for j, weight in enumerate(_weights(size)):  # vectorised over all n-grams, one position at a time
        mixed += weight * word_hashes[j:j + count]
    return mixed


def _sorted_index(entries: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.concatenate([hashes for hashes, _ in entries])
    owners = np.concatenate([np.full(len(hashes), owner, dtype=np.int32) for hashes, owner in entries])
    order = np.argsort(keys, kind="stable")
    return keys[order], owners[order]


# --- reading evaluation sets -----------------------------------------------------------------------------------

def read_eval_set(eval_set: EvalSet) -> tuple[list[EvalItem], list[str]]:
    """The set's items and the files they came from. A missing field or an unreadable file raises ValueError
    naming the file and the line (row, item): an evaluation set is configuration, so nothing in it is skipped."""
    items, urls = [], []
    for opened in _open_files(eval_set.uri, "rt"):
        url = opened.full_name.removeprefix("file://")
        urls.append(url)
        with opened as file:
            try:
                for where, record in _eval_records(eval_set, file):
                    items.append(EvalItem(f"{Path(url).name} {where}", _item_text(eval_set, record, where)))
            except BadFile as bad:
                raise ValueError(f"eval set {eval_set.name!r}: {url}: {bad.where}: {bad}") from None
    return items, urls


def _eval_records(eval_set: EvalSet, file) -> Iterator[tuple[str, dict]]:
    """(where, record): "line N" of a JSON file, "row N" of a CSV (rows may span lines), "item N" of HellaSwag."""
    if eval_set.format == "csv":
        for row, record in enumerate(_csv_rows(file), 1):
            yield f"row {row}", record
    elif eval_set.format == "hellaswag":
        for item, record in enumerate(_hellaswag(file), 1):
            yield f"item {item}", record
    else:
        for line, record in json_records(file):
            if not isinstance(record, dict):  # a malformed line (BadRecord) or not an object
                raise BadFile(f"line {line}", f"not a JSON object: {record}")
            yield f"line {line}", record


def _csv_rows(file) -> Iterator[dict]:
    """Rows by the header's names; the delimiter is the header's (MMLU-Redux files use both ',' and ';')."""
    header = file.readline()
    try:
        delimiter = csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:
        raise BadFile("line 1", f"no CSV header (columns separated by , ; tab or |): {header[:100]!r}") from None
    yield from csv.DictReader(chain([header], file), delimiter=delimiter)


def _hellaswag(file) -> Iterator[dict]:
    lines = [line.rstrip("\n") for line in file]
    if len(lines) % HELLASWAG_LINES:
        raise BadFile(f"line {len(lines)}", f"{len(lines)} lines, not {HELLASWAG_LINES} per item")
    for start in range(0, len(lines), HELLASWAG_LINES):
        ctx, label, *endings = lines[start:start + HELLASWAG_LINES]
        yield {"ctx": ctx, "label": label, "endings": endings}


def _item_text(eval_set: EvalSet, record: dict, where: str) -> str:
    """The item's `fields` joined by spaces; a list-valued field (the choices) gives all its strings."""
    parts = []
    for name in eval_set.fields:
        value = record.get(name)
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            raise BadFile(where, f"no text field {name!r} (the set's fields: {', '.join(eval_set.fields)})")
        parts += values
    return " ".join(parts)


def load_decontaminator(params: DecontaminationParams) -> tuple[Decontaminator, dict[str, list[str]]]:
    """The index over every evaluation set in params, and the files each set was read from."""
    eval_sets, files = {}, {}
    for eval_set in params.eval_sets:
        eval_sets[eval_set.name], files[eval_set.name] = read_eval_set(eval_set)
    return Decontaminator(eval_sets, params), files
