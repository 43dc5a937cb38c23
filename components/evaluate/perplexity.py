"""Bits per byte and perplexity on held-out text, and the check that the text is really held out.

Bits per byte = the summed negative log-likelihood (in bits) of a set's documents / their UTF-8 bytes: a number
that does not depend on the tokenizer, so models with different vocabularies compare (the pretraining stage's
validation reports the same quantity on token shards: components/train/evaluate.py). Perplexity is per token
(exp of the mean NLL per token), so it compares only models that share a tokenizer; it is reported because the
field did, with that caveat.

Each document is scored as pretraining saw one: BOS, then its tokens, every token predicted. A document longer
than the model's window is scored in sliding windows: the first window scores its tokens, each next window
advances by `stride` tokens and scores only those, seeing the window's remaining tokens as context, so every
token is scored once and (after the first window) with at least window - stride tokens before it.

Held out: `refuse_training_documents` raises when any document of an eval set is, exactly, a training document
(sha256 of the text with surrounding whitespace stripped). The eval sets are read as the curate stage reads a
source, so a source that is also in the mix splits into the same documents and is caught. It is an exact match:
a document changed on its way into the mix (cleaning, PII scrubbing) is not caught; the n-gram overlap
(components/evaluate/contamination.py) measures that kind.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np

from components.curated import CuratedSource, read_source
from components.evaluate.scoring import LogLikelihood, Pair
from components.evaluate.stats import Score, digest
from components.train.evaluate import bits_per_byte


class EvalTextInTraining(ValueError):
    """An eval text set holds documents the model was trained on."""


def document_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()


def refuse_training_documents(eval_sets: dict[str, list[str]], training_texts: Iterable[str]) -> None:
    """Raise EvalTextInTraining naming each set and how many of its documents are in `training_texts`."""
    wanted = {document_hash(text): name for name, texts in eval_sets.items() for text in texts}
    found: dict[str, int] = {}
    for text in training_texts:
        name = wanted.pop(document_hash(text), None)
        if name is not None:
            found[name] = found.get(name, 0) + 1
    if found:
        listed = ", ".join(f"{name} ({count} of {len(eval_sets[name])} documents)" for name, count in found.items())
        raise EvalTextInTraining(f"eval text in the training documents: {listed}; evaluate on held-out text")


def windows(ids: list[int], window: int, stride: int) -> list[Pair]:
    """(context, scored tokens) covering ids[1:] once each; ids[0] is BOS, never scored."""
    pairs, scored = [], 1
    while scored < len(ids):
        end = min(scored + (window if scored == 1 else stride), len(ids))
        pairs.append((ids[max(0, end - window - 1):scored], ids[scored:end]))
        scored = end
    return pairs


def document_nll(scorer: LogLikelihood, texts: list[str], stride_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(NLL in nats, tokens) per document."""
    stride = max(1, int(scorer.window * stride_fraction))
    pairs, owner, tokens = [], [], []
    for number, text in enumerate(texts):
        ids = scorer.document_ids(text)
        tokens.append(len(ids) - 1)
        for pair in windows(ids, scorer.window, stride):
            pairs.append(pair)
            owner.append(number)
    nll = np.zeros(len(texts))
    np.add.at(nll, owner, -scorer.score_ids(pairs))
    return nll, np.array(tokens)


def text_set_scores(scorer: LogLikelihood, source: CuratedSource, stride_fraction: float,
                    model: str) -> list[Score]:
    """bpb and perplexity of one set; intervals by a bootstrap over its documents (seeded)."""
    texts = [doc.text for doc in read_source(source)]
    nll, tokens = document_nll(scorer, texts, stride_fraction)
    n_bytes = np.array([len(text.encode()) for text in texts])
    bpb = bits_per_byte(float(nll.sum()), float(n_bytes.sum()))
    # A ratio of sums: resample documents, recompute the ratio (bits per byte weights long documents more).
    resampled = _ratio_bootstrap(nll / math.log(2), n_bytes)
    ppl_low, ppl_high = (math.exp(v) for v in _ratio_bootstrap(nll, tokens))
    common = {"task": source.name, "n": len(texts), "interval": "bootstrap over documents",
              "items_digest": digest(texts), "note": f"{int(n_bytes.sum())} bytes, {int(tokens.sum())} tokens"}
    return [Score(model, "bpb", value=bpb, ci_low=resampled[0], ci_high=resampled[1], **common),
            Score(model, "perplexity", value=math.exp(float(nll.sum()) / float(tokens.sum())), ci_low=ppl_low,
                  ci_high=ppl_high, **common)]


def _ratio_bootstrap(numerator: np.ndarray, denominator: np.ndarray, resamples: int = 2000) -> tuple[float, float]:
    if len(numerator) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(numerator), (resamples, len(numerator)))
    ratios = numerator[picks].sum(1) / denominator[picks].sum(1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)
