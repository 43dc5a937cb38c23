"""Multiple-choice items from the files in ../shared/data/eval/ (and the same formats at any size), and the two
ways of asking them (OLMES, Gu et al. 2024):

- cloze (ranked classification): the context, then each answer's text; the log-likelihood of " <answer>"
  ranks them. `acc` takes the highest, `acc_norm` the highest per character of the answer (lm-eval's
  `acc_norm`), which does not favour short answers.
- letter: the question, the options listed "A. ...", "Answer:", then " A", " B", ...: lm-evaluation-harness's
  `mmlu` prompt, for every task (MMLU adds its subject line on top, as lm-eval does).

Readers (each item keeps where it came from in its id):
- MMLU-Redux CSV (`,` or `;` separated: the header decides): question, choices (a Python list literal),
  answer (0-3), error_type ("ok" in any case means the annotators found no error: the `ok` subset).
- llm-foundry JSONL: {query, choices, gold}; commonsense_qa lists its options inside the query (parsed out, so
  cloze can score their texts); winogrande is {context_options, continuation, gold}: lm-eval's partial scoring,
  each option fills the blank (its own context) and the shared rest of the sentence is what is scored.
- HellaSwag, 6 lines per item ("activity: context", label, 4 endings) with lm-eval's preprocessing
  (`preprocess`: " [title]" -> ". ", other [brackets] dropped, double spaces) and its ctx_a + ctx_b.capitalize().
  The file keeps ctx = ctx_a + " " + ctx_b but not the split: ctx_b is taken to be the text after the last
  ". " when it starts in lower case (ActivityNet's dangling subject, "the lady"), else empty.
"""
from __future__ import annotations

import ast
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path

from components.curated import _open_files

LETTERS = "ABCDEFGHIJ"
# The prompt pieces; the prompt digest of a score covers every string here that its task uses.
LETTER_OPTION = "{letter}. {option}\n"
LETTER_PROMPT = "{question}\n{options}Answer:"
ANSWER_DELIMITER = " "  # between a context and its answer (lm-eval's target_delimiter)
SHOT_SEPARATOR = "\n\n"  # between few-shot examples (lm-eval's fewshot_delimiter)
MMLU_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
CLOZE_CONTEXT = {  # the cloze context from the item's stem
    "mmlu_redux": "Question: {question}\nAnswer:",
    "arc_easy": "{question}\nAnswer:",  # llm-foundry's query is "Question: ..."
    "arc_challenge": "{question}\nAnswer:",
    "piqa": "{question}\nAnswer:",  # "Question: <goal>"
    "boolq": "{question}\nAnswer:",  # "Passage: ...\nQuestion: ..."
    "commonsense_qa": "{question}\nAnswer:",
    "openbook_qa": "{question}",  # a sentence the answer completes
    "copa": "{question}",  # "..., therefore" / "..., because"
    "hellaswag": "{question}",
    "winogrande": "{question}",  # unused: each option is its own context (partial scoring)
}
HELLASWAG_LINES = 6


@dataclass(frozen=True)
class Item:
    id: str  # "<file> line N" (JSONL), "<file> row N" (CSV), "<file> item N" (HellaSwag)
    question: str  # the stem, shown above the lettered options
    options: tuple[str, ...]
    gold: int
    cloze: tuple[tuple[str, str], ...]  # (context, answer text) per option: what ranked classification scores
    header: str = ""  # once at the top of a prompt, before any few-shot example (MMLU's subject line)
    group: str = ""  # few-shot examples come from the same group (an MMLU subject)
    ok: bool | None = None  # MMLU-Redux: no error found by the annotators

    def as_dict(self) -> dict:
        return {"id": self.id, "question": self.question, "options": list(self.options), "gold": self.gold,
                "cloze": [list(pair) for pair in self.cloze], "header": self.header, "ok": self.ok}


def read_items(task: str, uri: str) -> list[Item]:
    """Every item of the task's files (a glob: files in name order), in file order."""
    items = []
    for opened in _open_files(uri, "rt"):
        name = Path(opened.path).name
        with opened as file:
            try:
                items += list(READERS[task](task, name, file))
            except (KeyError, ValueError, SyntaxError) as error:
                raise ValueError(f"{task}: {opened.path}: {error}") from error
    if not items:
        raise ValueError(f"{task}: no items in {uri}")
    return items


def _stem_item(task: str, item_id: str, question: str, options: list[str], gold: int, **extra) -> Item:
    context = CLOZE_CONTEXT[task].format(question=question)
    if not 0 <= gold < len(options):
        raise ValueError(f"{item_id}: gold {gold} is not one of {len(options)} options")
    return Item(item_id, question, tuple(options), gold, tuple((context, option) for option in options), **extra)


def _mmlu_redux(task: str, name: str, file) -> Iterator[Item]:
    subject = name.removeprefix("mmlu_").removesuffix(".csv")
    header = MMLU_HEADER.format(subject=subject.replace("_", " "))
    first = file.readline()
    delimiter = ";" if first.count(";") > first.count(",") else ","
    for row, record in enumerate(csv.DictReader(chain([first], file), delimiter=delimiter), 1):
        options = ast.literal_eval(record["choices"])
        yield _stem_item(task, f"{name} row {row}", record["question"].strip(), options, int(record["answer"]),
                         header=header, group=subject, ok=record["error_type"].strip().lower() == "ok")


def _foundry(task: str, name: str, file) -> Iterator[Item]:
    for line, text in enumerate(file, 1):
        if not text.strip():
            continue
        record = json.loads(text)
        item_id = f"{name} line {line}"
        if task == "winogrande":
            yield _winogrande(item_id, record)
        elif task == "commonsense_qa":
            question, options = _listed_options(record["query"])
            yield _stem_item(task, item_id, question, options, record["gold"])
        else:
            yield _stem_item(task, item_id, record["query"].strip(), record["choices"], record["gold"])


def _listed_options(query: str) -> tuple[str, list[str]]:
    """llm-foundry's CSQA query: "Question: ...\\nChoices:\\nA. text\\n...\\nAnswer:" -> the stem, the texts."""
    stem, _, listed = query.partition("\nChoices:\n")
    options = re.findall(r"^[A-J]\. (.*)$", listed, flags=re.MULTILINE)
    if not options:
        raise ValueError(f"no 'Choices:' list in {query[:80]!r}")
    return stem.strip(), options


def _winogrande(item_id: str, record: dict) -> Item:
    contexts, rest = record["context_options"], record["continuation"]
    # The options differ only in the word(s) filling the blank at the end of each context: the shared prefix,
    # cut back to a word boundary, is the sentence before the blank.
    shared = contexts[0][:min(len(c) for c in contexts)]
    while not all(c.startswith(shared) for c in contexts):
        shared = shared[:-1]
    shared = shared[:shared.rfind(" ") + 1]
    options = [c[len(shared):] for c in contexts]
    return Item(item_id, f"{shared}_ {rest}", tuple(options), record["gold"],
                tuple((context, rest) for context in contexts))


def _hellaswag(task: str, name: str, file) -> Iterator[Item]:
    lines = [line.rstrip("\n") for line in file]
    if len(lines) % HELLASWAG_LINES:
        raise ValueError(f"{len(lines)} lines, not {HELLASWAG_LINES} per item")
    for start in range(0, len(lines), HELLASWAG_LINES):
        text, label, *endings = lines[start:start + HELLASWAG_LINES]
        ctx_a, ctx_b = hellaswag_split(text)
        question = hellaswag_preprocess(ctx_a + " " + ctx_b.capitalize())
        yield _stem_item(task, f"{name} item {start // HELLASWAG_LINES + 1}", question,
                         [hellaswag_preprocess(e) for e in endings], int(label))


def hellaswag_split(text: str) -> tuple[str, str]:
    """("activity: ctx_a", ctx_b) of a HellaSwag line (see the module's docstring)."""
    head, dot, tail = text.rpartition(". ")
    if dot and tail[:1].islower():
        return head + ".", tail
    return text, ""


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag `preprocess` (tasks/hellaswag/utils.py)."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


READERS = {"mmlu_redux": _mmlu_redux, "hellaswag": _hellaswag,
           **{task: _foundry for task in CLOZE_CONTEXT if task not in ("mmlu_redux", "hellaswag")}}


# --- prompts --------------------------------------------------------------------------------------------------

def letter_prompt(item: Item) -> str:
    options = "".join(LETTER_OPTION.format(letter=LETTERS[i], option=o) for i, o in enumerate(item.options))
    return LETTER_PROMPT.format(question=item.question, options=options)


def requests(item: Item, formulation: str, shots: list[Item]) -> list[tuple[str, str]]:
    """(context, continuation) per option; few-shot examples (with their gold answers) come first."""
    prefix = item.header + "".join(solved(shot, formulation) + SHOT_SEPARATOR for shot in shots)
    if formulation == "letter":
        context = prefix + letter_prompt(item)
        return [(context, ANSWER_DELIMITER + LETTERS[i]) for i in range(len(item.options))]
    return [(prefix + context, ANSWER_DELIMITER + answer) for context, answer in item.cloze]


def answer_lengths(item: Item, formulation: str) -> list[int]:
    """The characters acc_norm divides by: the answer's text (lm-eval: len of the choice, no delimiter)."""
    if formulation == "letter":
        return [1] * len(item.options)
    return [len(answer) for _, answer in item.cloze]


def solved(item: Item, formulation: str = "cloze") -> str:
    """The item asked and answered (its gold answer): a few-shot example, or the text a leak would hold."""
    context, continuation = requests(replace(item, header=""), formulation, [])[item.gold]
    return context + continuation


def prompt_format(task: str, formulation: str) -> dict:
    """Every template string a (task, formulation) prompt is made of: what its prompt digest covers."""
    shared = {"answer_delimiter": ANSWER_DELIMITER, "shot_separator": SHOT_SEPARATOR}
    if task == "mmlu_redux":
        shared["header"] = MMLU_HEADER
    if formulation == "letter":
        return {**shared, "letters": LETTERS, "option": LETTER_OPTION, "prompt": LETTER_PROMPT}
    if task == "winogrande":
        return {**shared, "cloze": "partial scoring: each option's context, the shared rest of the sentence"}
    return {**shared, "cloze": CLOZE_CONTEXT[task]}
