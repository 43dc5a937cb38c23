"""Running filters over documents, datatrove-style: every step keeps its own stats, every removal its reason."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from components.clean.doc import Doc, Filter

REMOVED_TEXT_CHARS = 2000  # enough to judge a removal by eye; removed docs are most of a crawl
REMOVAL_DETAIL = "removal_detail"  # a filter may leave what it found here (e.g. the bad word): the audit row's detail


@dataclass
class StepStats:
    docs_in: int = 0
    docs_out: int = 0
    chars_out: int = 0  # characters of text that survive the step (0 before extraction)
    removed: Counter = field(default_factory=Counter)  # rule → documents

    def merge(self, other: StepStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.chars_out += other.chars_out
        self.removed.update(other.removed)

    def as_dict(self) -> dict:
        return {"docs_in": self.docs_in, "docs_out": self.docs_out, "chars_out": self.chars_out,
                "removed": dict(sorted(self.removed.items()))}


def removal(doc: Doc, step: str, rule: str, detail: str = "") -> dict:
    """One row of the removed-documents table."""
    return {"id": doc.id, "url": doc.url, "source": doc.source, "step": step, "rule": rule, "detail": detail,
            "text": (doc.text or doc.meta.get("html", ""))[:REMOVED_TEXT_CHARS]}


def apply_filters(docs: Iterable[Doc], filters: list[Filter], stats: dict[str, StepStats],
                  removed: list[dict]) -> Iterator[Doc]:
    """Yield the documents every filter keeps; count each step and record each removal with its rule."""
    for doc in docs:
        for step in filters:
            step_stats = stats.setdefault(step.name, StepStats())
            step_stats.docs_in += 1
            rule = step(doc)
            if rule:
                step_stats.removed[rule] += 1
                removed.append(removal(doc, step.name, rule, detail=doc.meta.pop(REMOVAL_DETAIL, "")))
                break
            step_stats.docs_out += 1
            step_stats.chars_out += len(doc.text)
        else:
            yield doc


def merge_stats(parts: Iterable[dict[str, StepStats]]) -> dict[str, StepStats]:
    total: dict[str, StepStats] = {}
    for part in parts:
        for name, step_stats in part.items():
            total.setdefault(name, StepStats()).merge(step_stats)
    return total
