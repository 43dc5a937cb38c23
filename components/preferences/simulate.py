"""Simulated preference pairs, the AlpacaFarm way (Dubois et al. 2023): the policy (the SFT model, served) samples
two replies to each prompt, an LLM judge says which is better, and the pair is (its pick, the other).

- The judge sees the conversation and the two replies as "Output (a)" and "Output (b)"; which reply is shown
  first is a seeded coin per prompt, so a judge that favours a position cannot favour a sample. Its answer is
  kept verbatim (`judgements.jsonl` in the report), and one that names neither or both outputs gives no pair.
- Every request goes through `CachedChat`: a rerun with the same prompts, models and settings asks nothing.
- How far to trust the judge: it also labels a seeded sample of the human pairs, and its agreement with the
  human label is reported with Wilson's 95% interval (and the share of verdicts for the first position: a
  judge with no position bias is near 0.5 on randomised positions).
"""
from __future__ import annotations

import random
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from tqdm import tqdm

from components.evaluate.stats import wilson
from components.preferences.pairs import Pair, make_pair, prompt_id
from components.preferences.params import Endpoint, SimulationParams
from components.preferences.requests import CachedChat, Completion
from components.preferences.sources import SECTION, PreferenceDataError
from components.sft_data.examples import content_digest
from components.sft_data.readers import BadRecord
from components.sft_data.sources import SourceRead, read_source

JUDGE_SYSTEM = ("You compare two replies of an AI assistant to the same conversation and say which one is better: "
                "more helpful, correct, honest and harmless, and doing what the user asked.")
JUDGE_PROMPT = """Conversation:
{conversation}

Output (a):
{first}

Output (b):
{second}

Which output is the better next reply of the assistant? Answer with exactly "Output (a)" or "Output (b)"."""
VERDICT = re.compile(r"output\s*\(?\s*([ab])\b", re.IGNORECASE)
BARE_VERDICT = re.compile(r"^\W*([ab])\W*$", re.IGNORECASE)  # "a", "(b)", "B."


class Verdict(NamedTuple):
    picked: int | None  # the index of the better reply in the pair given, None when the judge named neither
    first: bool | None  # whether the pick was the output shown first (position bias)
    completion: Completion


@dataclass
class Simulation:
    read: SourceRead  # the simulated pairs as one more source: the prompts' files, their bad records
    outcomes: Counter = field(default_factory=Counter)  # per prompt: pair, same_replies, empty_content, judge_unparsed
    agreement: dict = field(default_factory=dict)
    judgements: list[dict] = field(default_factory=list)  # every judge call and sample, verbatim


def simulate(params: SimulationParams, human: list[Pair], chat: CachedChat, on_bad_record: str = "error",
             progress: bool = True) -> Simulation:
    """Pairs for the prompts of `params.prompts`, and the judge's agreement with `human` labels."""
    prompts_read = read_source(params.prompts, on_bad_record, SECTION, PreferenceDataError)
    prompts = list({prompt_id(p): p for p in (e.messages[:-1] for e in prompts_read.examples)}.values())
    prompts = prompts[:params.max_prompts]
    simulation = Simulation(SourceRead(params.name, files=prompts_read.files, bad_records=prompts_read.bad_records))
    for pair, record in _parallel(partial(_simulated_pair, params, chat), prompts, params.concurrency,
                                  "preferences: simulate", progress):
        simulation.outcomes[record["outcome"]] += 1
        simulation.judgements.append(record)
        if pair is not None:
            simulation.read.examples.append(pair)
    simulation.agreement, judgements = judge_agreement(params, chat, human, progress)
    simulation.judgements += judgements
    return simulation


def _simulated_pair(params: SimulationParams, chat: CachedChat, prompt: list[dict]) -> tuple[Pair | None, dict]:
    key = prompt_id(prompt)
    samples = [chat.complete(params.policy, prompt, seed=params.seed + k) for k in range(2)]
    record = {"task": "simulate", "key": key, "samples": [s.text for s in samples],
              "sample_requests": [s.digest for s in samples]}
    turns = [(message["role"], message["content"]) for message in prompt]
    try:  # the checks of every pair: no empty reply, not the same reply twice
        pair = make_pair(params.name, "simulated", (turns, *(("assistant", s.text) for s in samples)))
    except BadRecord as bad:
        return None, record | {"outcome": bad.reason}
    verdict = judge(chat, params.judge, pair.prompt, (pair.chosen, pair.rejected), coin(params.seed, key))
    record |= _verdict_record(verdict)
    if verdict.picked is None:
        return None, record | {"outcome": "judge_unparsed"}
    if verdict.picked == 1:
        pair = make_pair(params.name, "simulated", (turns, ("assistant", pair.rejected), ("assistant", pair.chosen)))
    return pair, record | {"outcome": "pair", "id": pair.id}


def judge_agreement(params: SimulationParams, chat: CachedChat, human: list[Pair],
                    progress: bool = True) -> tuple[dict, list[dict]]:
    """The judge on a seeded sample of human pairs: how often it picks the human's chosen reply (with Wilson's
    95% interval; None when it judged none), and its judgements."""
    sample = random.Random(params.seed).sample(sorted(human, key=lambda p: p.id), min(params.agreement_pairs,
                                                                                       len(human)))
    verdicts = list(_parallel(
        lambda pair: judge(chat, params.judge, pair.prompt, (pair.chosen, pair.rejected), coin(params.seed, pair.id)),
        sample, params.concurrency, "preferences: judge vs human", progress))
    judgements = [{"task": "agreement", "key": pair.id, "source": pair.source, **_verdict_record(verdict),
                   "agrees": None if verdict.picked is None else verdict.picked == 0}
                  for pair, verdict in zip(sample, verdicts)]
    judged = [verdict for verdict in verdicts if verdict.picked is not None]
    agreed = sum(verdict.picked == 0 for verdict in judged)
    low, high = wilson(agreed, len(judged)) if judged else (None, None)
    summary = {"pairs": len(sample), "judged": len(judged), "unparsed": len(sample) - len(judged), "agreed": agreed,
               "agreement": agreed / len(judged) if judged else None, "agreement_low": low, "agreement_high": high,
               "first_position_share": sum(v.first for v in judged) / len(judged) if judged else None}
    return summary, judgements


def judge(chat: CachedChat, endpoint: Endpoint, prompt: list[dict], replies: tuple[str, str], swap: bool) -> Verdict:
    """Which of the two replies the judge prefers; `replies[1]` is shown first when `swap`."""
    shown = replies[::-1] if swap else replies
    completion = chat.complete(endpoint, judge_messages(prompt, *shown))
    position = parse_verdict(completion.text)
    if position is None:
        return Verdict(None, None, completion)
    return Verdict(position ^ swap, position == 0, completion)


def judge_messages(prompt: list[dict], first: str, second: str) -> list[dict]:
    conversation = "\n\n".join(f"{message['role'].capitalize()}: {message['content']}" for message in prompt)
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_PROMPT.format(conversation=conversation, first=first, second=second)}]


def parse_verdict(text: str) -> int | None:
    """0 for "Output (a)", 1 for "Output (b)"; None when the answer names neither, or both."""
    letters = {letter.lower() for letter in VERDICT.findall(text)}
    if not letters and (bare := BARE_VERDICT.match(text.strip())):
        letters = {bare[1].lower()}
    return "ab".index(letters.pop()) if len(letters) == 1 else None


def coin(seed: int, key: str) -> bool:
    """A seeded fair coin per key: the same prompt always shows its replies in the same order."""
    return int(content_digest(str(seed), "position", key), 16) % 2 == 1


def _verdict_record(verdict: Verdict) -> dict:
    return {"verdict": verdict.completion.text, "judge_request": verdict.completion.digest,
            "picked": verdict.picked, "picked_first": verdict.first}


def _parallel(function, items: list, workers: int, desc: str, progress: bool):
    """`function` over `items` with `workers` requests in flight, results in order."""
    with ThreadPoolExecutor(workers) as pool:
        yield from tqdm(pool.map(function, items), total=len(items), desc=desc, disable=not progress, file=sys.stderr)
