"""Multiple-choice accuracy, both formulations, 0- and k-shot, each with its Wilson interval, chance line and
digests.

Few-shot examples: the first `fewshot_pool` items of each group (an MMLU subject, else the whole file) form the
pool and are never scored, whatever the shot count, so 0-shot and k-shot numbers are on the same items. An item's
k examples are drawn from its group's pool by a generator seeded with (seed, item id): the same prompt on every
run and machine, different examples for different items (lm-eval draws per item too; its MMLU takes the dev
split's first k). `max_items` scores a seeded sample of the rest, kept in file order.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from components.evaluate.params import TaskSpec
from components.evaluate.scoring import LogLikelihood
from components.evaluate.stats import Score, digest, wilson
from components.evaluate.tasks import Item, answer_lengths, prompt_format, read_items, requests


@dataclass
class Predictions:
    loglikelihoods: list[np.ndarray]  # per item, per option
    acc: np.ndarray  # the option with the highest log-likelihood, per item
    acc_norm: np.ndarray  # ... per character of the answer


def split_pool(items: list[Item], pool_size: int) -> tuple[dict[str, list[Item]], list[Item]]:
    """({group: its first `pool_size` items}, the items left to score)."""
    pools: dict[str, list[Item]] = defaultdict(list)
    scored = []
    for item in items:
        if len(pools[item.group]) < pool_size:
            pools[item.group].append(item)
        else:
            scored.append(item)
    return dict(pools), scored


def sample(items: list[Item], max_items: int | None, seed: int) -> list[Item]:
    if max_items is None or max_items >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), max_items))
    return [items[i] for i in keep]


def shots_for(item: Item, pools: dict[str, list[Item]], k: int, seed: int) -> list[Item]:
    if k == 0:
        return []
    return random.Random(f"{seed}:{item.id}").sample(pools[item.group], k)


def predict(scorer: LogLikelihood, items: list[Item], formulation: str,
            shots: list[list[Item]] | None = None) -> Predictions:
    """Every option of every item scored in one batched call (contexts shared across a question's options)."""
    shots = shots or [[] for _ in items]
    pairs, bounds = [], [0]
    for item, examples in zip(items, shots):
        pairs += requests(item, formulation, examples)
        bounds.append(len(pairs))
    scores = scorer.score(pairs)
    lls = [scores[start:end] for start, end in zip(bounds, bounds[1:])]
    acc = np.array([int(np.argmax(ll)) for ll in lls])
    norm = np.array([int(np.argmax(ll / np.array(answer_lengths(item, formulation))))
                     for item, ll in zip(items, lls)])
    return Predictions(lls, acc, norm)


def evaluate_task(scorer: LogLikelihood, spec: TaskSpec, model: str) -> list[Score]:
    pools, rest = split_pool(read_items(spec.task, spec.uri), spec.fewshot_pool)
    items = sample(rest, spec.max_items, spec.seed)
    gold = np.array([item.gold for item in items])
    subsets = {"all": np.ones(len(items), dtype=bool)}
    if spec.task == "mmlu_redux":
        subsets["ok"] = np.array([bool(item.ok) for item in items])
    scores = []
    for k in spec.shots:
        shots = [shots_for(item, pools, k, spec.seed) for item in items]
        for formulation in spec.formulations:
            found = predict(scorer, items, formulation, shots)
            prompt = digest({"task": spec.task, "formulation": formulation, "shots": k, "seed": spec.seed,
                             "format": prompt_format(spec.task, formulation), "fewshot_pool": spec.fewshot_pool})
            measures = {"acc": found.acc} if formulation == "letter" else {"acc": found.acc, "acc_norm": found.acc_norm}
            for subset, keep in subsets.items():
                chosen = [item for item, kept in zip(items, keep) if kept]
                chance = float(np.mean([1 / len(item.options) for item in chosen]))
                content = digest([item.as_dict() for item in chosen])
                for measure, predicted in measures.items():
                    correct, n = int((predicted[keep] == gold[keep]).sum()), len(chosen)
                    low, high = wilson(correct, n)
                    scores.append(Score(model, measure, spec.task, correct / n, low, high, "wilson", chance, n,
                                        formulation, k, subset, prompt, content))
    return scores
