"""Synthetic instruction data by Alpaca's self-instruct recipe (Taori et al. 2023, after Wang et al. 2022): a
teacher behind an OpenAI-compatible endpoint reads Alpaca's prompt.txt and a few human-written seed tasks,
continues the numbered list with new tasks, and the new tasks that pass Alpaca's filters become training data.

As Alpaca's generate_instruction.py does:
- a request is prompt.txt, then `seed_demonstrations` (3) seed tasks drawn without replacement from the seed tasks
  only (Alpaca never shows a generated task; the original self-instruct mixed 2 generated ones into its 8), each
  with its first instance, as "###\\n1. Instruction: ...\\n1. Input:\\n...\\n1. Output:\\n..." (the instruction's
  whitespace collapsed and a trailing colon cut, an empty input written "<noinput>"), then "###\\n4. Instruction:"
  for the teacher to go on. The list is `request_batch` tasks long (prompt.txt's "20" is replaced), and the reply
  stops where task number `request_batch` would begin: at most request_batch - seed_demonstrations - 1 new tasks
  (16). Sampling as Alpaca's: temperature 1, top_p 1, max_tokens 3072; each request also carries a seed of its own;
- a reply is split at "###" into tasks "N. Instruction: / N. Input: / N. Output:"; the last task of a reply cut
  by max_tokens is dropped (`truncated`);
- a task is dropped by the first rule it breaks: an instruction of 3 words or fewer (`too_short`) or over 150
  (`too_long`); a word of the blacklist (image, graph, file, map, draw, plot, go to, video, audio, music, ...:
  what a language model cannot do; whole words, any case); starting with "Write a program" (the teacher adds it
  to many tasks); starting with punctuation; starting with a non-ASCII character; a ROUGE-L F-measure above
  `rouge_l_max` (0.7) with any instruction of the pool, the seed tasks and the tasks accepted so far
  (`similar_to_pool`). Every drop is counted by its rule.

Where this differs: a chat endpoint instead of the completions API (the prompt is the user turn; a reply that
starts with "4. Instruction:" and one that leaves it out parse alike); a task without an output or with
inconsistent numbers is counted as `malformed` (Alpaca keeps empty outputs, which no chat example can have);
Alpaca's stop strings ("\\n20", "20.") also cut a reply at "$20." inside an output, the stop here is
"20. Instruction:"; generation stops at exactly `num_instructions` accepted (Alpaca overshoots by a batch).

ROUGE-L is the `rouge-score` package's, as Alpaca calls it: its tokenizer without stemming, its LCS F-measure.
A task is compared with the whole pool, which is quadratic over a run; since F = 2·LCS/(m+n) and the LCS has at
most the tokens two instructions share (as multisets), a pair whose shared tokens cannot pass the threshold is
not scored. That is exact, and 12x faster: the 1,174 instructions of the seed tasks and the Alpaca demo compared
pairwise take 5.5 µs a pair instead of 65.

Every teacher response is kept on disk by the project's cached client (components/openai_client.CachedChat),
one JSON file named by the sha256 of the request (endpoint, model, messages, sampling; the endpoint because a
hosted model id such as "gpt-4o" names different models at different providers): a rerun, or one asking for more
instructions, pays only for requests not made before. The demonstrations come from a seeded generator and from
the seed tasks only, so request i is the same request in every run whatever the replies were. The API key is
read from the environment by the client, into the request's header, and written nowhere.
"""
from __future__ import annotations

import random
import re
import string
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from components.curated import _open_files  # the sources' URI handling: local, https://, s3://
from components.openai_client import CachedChat, Completion, Usage
from components.sft_data.params import SYNTHETIC_SOURCE, DataSource, SftSource, SyntheticParams
from components.sft_data.readers import _instances, text_field  # one alpaca record → its instances
from components.sft_data.report import write_jsonl
from components.sft_data.sources import SourceRead, read_records

NO_INPUT = "<noinput>"
BLACKLIST = re.compile(r"\b(image|images|graph|graphs|picture|pictures|file|files|map|maps|draw|plot|go to|video|"
                       r"audio|music|flowchart|diagram)\b", re.IGNORECASE)
LIST_SIZE = re.compile(r"(?<=of )20\b")  # prompt.txt: "come up with a set of 20 diverse task ...", "List of 20 tasks:"
TASK_START = re.compile(r"\s*(?:###\s*)?\d+\.\s*Instruction:")
TASK = re.compile(r"\s*(\d+)\.\s*Instruction:(.*?)\n\s*\1\.\s*Input:(.*?)\n\s*\1\.\s*Output:(.*)", re.DOTALL)
DROP_REASONS = ("truncated", "malformed", "too_short", "too_long", "blacklisted_word", "write_a_program",
                "starts_with_punctuation", "starts_non_ascii", "similar_to_pool")
MARGIN = 1e-9  # the package's F-measure may exceed the exact bound by float rounding: only clear misses are skipped


class Task(NamedTuple):
    instruction: str
    input: str
    output: str


# --- the request and the reply --------------------------------------------------------------------------------

def list_prompt(prompt: str, size: int) -> str:
    """prompt.txt asking for a list of `size` tasks."""
    return LIST_SIZE.sub(str(size), prompt)


def request_prompt(prompt: str, demonstrations: list[Task]) -> str:
    """The prompt, the numbered demonstrations, and the start of the next task, as Alpaca's encode_prompt."""
    parts = [f"{prompt}\n"]
    for number, task in enumerate(demonstrations, 1):
        instruction = re.sub(r"\s+", " ", task.instruction).strip().rstrip(":")
        parts.append(f"###\n{number}. Instruction: {instruction}\n{number}. Input:\n{task.input or NO_INPUT}\n"
                     f"{number}. Output:\n{task.output}\n")
    parts.append(f"###\n{len(demonstrations) + 1}. Instruction:")
    return "".join(parts)


def parse_reply(reply: str, first_number: int, truncated: bool) -> tuple[list[Task], Counter]:
    """The tasks of a reply that continues the list at task `first_number`, and the count of those dropped
    (`truncated`: the last one of a reply cut by max_tokens; `malformed`)."""
    text = reply if TASK_START.match(reply) else f"{first_number}. Instruction:{reply}"
    chunks = text.split("###")
    dropped = Counter()
    if truncated:  # what follows the last separator was cut short (nothing, when the cut fell right after it)
        dropped["truncated"] += bool(chunks.pop().strip())
    tasks = []
    for chunk in filter(str.strip, chunks):
        task = _task(chunk)
        if task is None:
            dropped["malformed"] += 1
        else:
            tasks.append(task)
    return tasks, dropped


def _task(chunk: str) -> Task | None:
    match = TASK.fullmatch(chunk)
    if match is None:
        return None
    instruction, given, output = (part.strip() for part in match.groups()[1:])
    if not instruction or not output:
        return None
    return Task(instruction, "" if given.lower() == NO_INPUT else given, output)


# --- the filters -------------------------------------------------------------------------------------------------

def broken_rule(instruction: str) -> str | None:
    """The first of Alpaca's rules that the instruction breaks, or None."""
    words = len(instruction.split())
    if words <= 3:
        return "too_short"
    if words > 150:
        return "too_long"
    if BLACKLIST.search(instruction):
        return "blacklisted_word"
    if instruction.startswith("Write a program"):
        return "write_a_program"
    if instruction[0] in string.punctuation:
        return "starts_with_punctuation"
    if not instruction[0].isascii():
        return "starts_non_ascii"
    return None


class InstructionPool:
    """The instructions so far, as ROUGE tokenizes them; whether a new one is too similar to any of them."""

    def __init__(self, instructions: list[str], rouge_l_max: float):
        from rouge_score.tokenizers import DefaultTokenizer

        self.tokenizer = DefaultTokenizer(use_stemmer=False)
        self.rouge_l_max = rouge_l_max
        self.entries: list[tuple[list[str], Counter]] = []
        for instruction in instructions:
            self.add(instruction)

    def add(self, instruction: str) -> None:
        tokens = self.tokenizer.tokenize(instruction)
        self.entries.append((tokens, Counter(tokens)))

    def too_similar(self, instruction: str) -> bool:
        """Whether its ROUGE-L F-measure with an instruction of the pool is above `rouge_l_max`."""
        from rouge_score.rouge_scorer import _score_lcs  # what Alpaca calls

        tokens = self.tokenizer.tokenize(instruction)
        bag = Counter(tokens)
        for other, other_bag in self.entries:
            length = len(tokens) + len(other)
            if not length or 2 * (bag & other_bag).total() / length <= self.rouge_l_max - MARGIN:
                continue  # the bound: F = 2·LCS/(m+n) and LCS <= the tokens they share
            if _score_lcs(tokens, other).fmeasure > self.rouge_l_max:
                return True
        return False


# --- the teacher ------------------------------------------------------------------------------------------------

def teacher(params: SyntheticParams, cache_dir: Path) -> CachedChat:
    """The teacher, its address part of every request's digest (see the module's docstring)."""
    return CachedChat(params.base_url, params.model, params.api_key_env, cache_dir,
                      identity={"base_url": params.base_url})


# --- the run ------------------------------------------------------------------------------------------------------

@dataclass
class Generation:
    """What a run produced and what it cost."""

    path: Path  # the accepted tasks, alpaca format, one JSON object per line
    seeds: SourceRead
    prompt_url: str
    usage: Usage  # the teacher's requests and tokens
    accepted: list[Task] = field(default_factory=list)
    candidates: int = 0  # tasks parsed out of the replies and filtered (none once enough are accepted)
    dropped: Counter = field(default_factory=Counter)

    @property
    def source(self) -> SftSource:
        """The accepted tasks as a source of the stage."""
        return SftSource(name=SYNTHETIC_SOURCE, format="alpaca", uri=str(self.path))

    def files(self, params: SyntheticParams) -> list[dict]:
        """What the data was made from, for lineage: the seed tasks, the prompt and the teacher (never its key)."""
        return [*(tally | {"role": "seed_tasks"} for tally in self.seeds.files),
                {"url": self.prompt_url, "role": "prompt"},
                {"url": params.base_url, "model": params.model, "role": "teacher"}]

    def summary(self, params: SyntheticParams) -> dict:
        """The counts, the tokens and the cost in USD (None without prices), for the manifest."""
        tokens = self.usage.tokens
        return {
            "teacher": {"base_url": params.base_url, "model": params.model},
            "requests": {what: self.usage.requests[what] for what in ("made", "cached")},
            "tokens": {kind: tokens[kind] for kind in ("prompt", "completion")},
            "tokens_paid": {kind: tokens[f"paid_{kind}"] for kind in ("prompt", "completion")},
            "replies_without_usage": self.usage.without_usage,
            "cost_usd": cost_usd(tokens["prompt"], tokens["completion"], params),
            "cost_usd_paid": cost_usd(tokens["paid_prompt"], tokens["paid_completion"], params),
            "tasks": {"wanted": params.num_instructions, "candidates": self.candidates, "accepted": len(self.accepted)},
            "dropped": {reason: self.dropped[reason] for reason in DROP_REASONS},
        }


def cost_usd(prompt_tokens: int, completion_tokens: int, params: SyntheticParams) -> float | None:
    if params.price_per_1k_input_tokens is None:
        return None
    return round(prompt_tokens / 1000 * params.price_per_1k_input_tokens
                 + completion_tokens / 1000 * params.price_per_1k_output_tokens, 6)


def generate(params: SyntheticParams, path: Path, cache_dir: Path, progress: bool = True) -> Generation:
    """Ask the teacher for tasks until `num_instructions` are accepted or `max_requests` were made; write the
    accepted ones to `path` (alpaca format)."""
    seeds = read_seed_tasks(params)
    prompt_url, prompt = read_prompt(params)
    prompt = list_prompt(prompt, params.request_batch)
    pool = InstructionPool([task.instruction for task in seeds.examples], params.rouge_l_max)
    client = teacher(params, cache_dir)
    generation = Generation(Path(path), seeds, prompt_url, client.usage)
    demonstrations = random.Random(params.seed)
    max_requests = params.max_requests or params.num_instructions
    with (ThreadPoolExecutor(params.concurrency) as executor,
          tqdm(total=params.num_instructions, desc="sft_data: self-instruct", disable=not progress,
               file=sys.stderr) as bar):
        while len(generation.accepted) < params.num_instructions and client.usage.requests.total() < max_requests:
            first = client.usage.requests.total()
            indices = range(first, min(first + params.concurrency, max_requests))
            messages = [[{"role": "user", "content": request_prompt(
                prompt, demonstrations.sample(seeds.examples, params.seed_demonstrations))}] for _ in indices]
            replies = [executor.submit(client.complete, request, **sampling(params, index))
                       for request, index in zip(messages, indices)]
            for reply in replies:  # in request order: which tasks are accepted does not depend on timing
                _take(reply.result(), generation, pool, params, bar)
    generation.path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(generation.path, [task._asdict() for task in generation.accepted])
    return generation


def sampling(params: SyntheticParams, index: int) -> dict:
    """Request `index`'s settings: its own seed, so two requests showing the same demonstrations differ."""
    return {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens,
            "stop": [f"{params.request_batch}. Instruction:"], "seed": params.seed + index}


def _take(reply: Completion, generation: Generation, pool: InstructionPool, params: SyntheticParams, bar) -> None:
    """Filter the reply's tasks into the pool, in order, until enough are accepted."""
    tasks, dropped = parse_reply(reply.text, params.seed_demonstrations + 1, reply.finish_reason == "length")
    generation.dropped.update(dropped)
    for task in tasks:
        if len(generation.accepted) >= params.num_instructions:
            return
        generation.candidates += 1
        reason = broken_rule(task.instruction) or ("similar_to_pool" if pool.too_similar(task.instruction) else None)
        if reason:
            generation.dropped[reason] += 1
            continue
        pool.add(task.instruction)
        generation.accepted.append(task)
        bar.update()


def read_seed_tasks(params: SyntheticParams) -> SourceRead:
    """The seed tasks (self-instruct's `instruction` + `instances`, or alpaca records), each with its first
    instance: what Alpaca shows as a demonstration."""
    source = DataSource(name="seed_tasks", **params.seed_tasks.model_dump())
    return read_records(source, _seed_task, section="sft_data.synthetic")


def _seed_task(record: dict) -> list[Task]:
    first = _instances(record)[0]
    return [Task(text_field(record, "instruction"), text_field(first, "input", required=False),
                 text_field(first, "output"))]


def read_prompt(params: SyntheticParams) -> tuple[str, str]:
    """The prompt file's URL and text."""
    opened = _open_files(params.prompt.uri, "rt")[0]
    with opened as file:
        return opened.full_name.removeprefix("file://"), file.read()
