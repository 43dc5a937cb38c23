"""Test-set contamination: Oren et al. 2023's exchangeability test on the model, n-gram overlap on the data.

The permutation test ("Proving test set contamination in black box language models", Oren et al., ICLR 2024):
a benchmark's items are exchangeable — nothing about the data makes one order likelier than another — so a
model that never saw the benchmark gives its canonical (published) order no more likelihood than a shuffled
order. A model trained on the file in its canonical order does. The sharded version: the canonical order is cut
into `shards` contiguous shards; each shard's log-likelihood in canonical order is compared with the mean over
`permutations` seeded shuffles of the same shard; the differences, one per shard, are tested with a one-sided
t-test (mean > 0). A p-value below 0.01 says the canonical order is recognised: the benchmark leaked into
training in that order. A large p-value is not proof of cleanliness (shuffled or partial copies escape it).

An item is serialized as its cloze question followed by its gold answer (tasks.solved), the items of a shard
joined by newlines, scored as one document (BOS, sliding windows when longer than the model's window).

N-gram overlap (GPT-3's, Brown et al. 2020 appendix C, on normalised words: lower case, NFKC, no punctuation):
the fraction of an eval set's items sharing at least one word n-gram with the training documents, and the mean
fraction of an item's n-grams seen. Items shorter than n words are compared as a whole.
"""
from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np
from scipy import stats

from components.clean.dedup import normalise
from components.evaluate.perplexity import document_nll
from components.evaluate.scoring import LogLikelihood
from components.evaluate.stats import Score, wilson
from components.sft_data.decontaminate import ngram_hashes


def permutation_test(scorer: LogLikelihood, examples: list[str], shards: int, permutations: int,
                     seed: int = 0) -> dict:
    """{p_value, t, mean_gap_nats, shards}: the sharded exchangeability test on `examples` in canonical order."""
    if len(examples) < 2 * shards:
        raise ValueError(f"{len(examples)} examples cannot fill {shards} shards of 2 or more")
    bounds = np.linspace(0, len(examples), shards + 1).astype(int)
    rng = random.Random(seed)
    texts = []
    for start, end in zip(bounds, bounds[1:]):
        shard = examples[start:end]
        texts.append("\n".join(shard))
        texts += ["\n".join(rng.sample(shard, len(shard))) for _ in range(permutations)]
    nll, _ = document_nll(scorer, texts, stride_fraction=0.5)
    loglik = -nll.reshape(shards, permutations + 1)
    gaps = loglik[:, 0] - loglik[:, 1:].mean(axis=1)
    test = stats.ttest_1samp(gaps, 0.0, alternative="greater")
    return {"p_value": float(test.pvalue), "t": float(test.statistic), "mean_gap_nats": float(gaps.mean()),
            "shards": shards}


def contamination_score(scorer: LogLikelihood, task: str, examples: list[str], shards: int, permutations: int,
                        seed: int, model: str, items_digest: str) -> Score:
    result = permutation_test(scorer, examples, shards, permutations, seed)
    return Score(model, "contamination_p", task, result["p_value"], n=len(examples), interval="",
                 items_digest=items_digest,
                 note=f"Oren et al. sharded test: {shards} shards x {permutations} permutations, t={result['t']:.2f}, "
                      f"canonical order {result['mean_gap_nats']:+.2f} nats vs shuffled")


def ngram_overlap(training_texts: Iterable[str], eval_sets: dict[str, list[str]], n: int) -> dict[str, dict]:
    """Per eval set: {items, items_overlapping, mean_fraction_seen}, one pass over the training texts."""
    words = {name: [normalise(text).split() for text in texts] for name, texts in eval_sets.items()}
    item_hashes = {name: [ngram_hashes(w, min(n, len(w))) for w in lists] for name, lists in words.items()}
    sizes = {min(n, len(w)) for lists in words.values() for w in lists if w}
    every = [h for hashes in item_hashes.values() for h in hashes]
    wanted = np.unique(np.concatenate([*every, np.zeros(0, np.uint64)]))
    seen: set[int] = set()
    for text in training_texts:
        text_words = normalise(text).split()
        for size in sizes:
            hashes = ngram_hashes(text_words, size)
            at = np.minimum(np.searchsorted(wanted, hashes), len(wanted) - 1)
            seen.update(hashes[wanted[at] == hashes].tolist())
    seen_array = np.array(sorted(seen), dtype=np.uint64)
    result = {}
    for name, hashes in item_hashes.items():
        fractions = np.array([np.isin(h, seen_array).mean() if len(h) else 0.0 for h in hashes])
        result[name] = {"items": len(hashes), "items_overlapping": int((fractions > 0).sum()),
                        "mean_fraction_seen": float(fractions.mean()) if len(hashes) else 0.0}
    return result


def overlap_scores(overlap: dict[str, dict], n: int, model: str) -> list[Score]:
    scores = []
    for name, counts in overlap.items():
        low, high = wilson(counts["items_overlapping"], counts["items"])
        scores.append(Score(model, "ngram_overlap", name, counts["items_overlapping"] / max(counts["items"], 1),
                            low, high, "wilson", n=counts["items"],
                            note=f"items sharing a word {n}-gram with the training documents; mean fraction of an "
                                 f"item's {n}-grams seen {counts['mean_fraction_seen']:.3f}"))
    return scores
