"""Log-likelihoods of continuations under a causal LM, with lm-evaluation-harness 0.4's conventions, batched.

Conventions (lm-eval's `HFLM`, so that per-item predictions agree with it):
- (context, continuation) is tokenized as lm-eval's `_encode_pair`: trailing spaces of the context move to the
  continuation, context + continuation is encoded whole, and the continuation's tokens are what follows the
  context's own encoding (so a merge across the boundary is the continuation's); the tokenizer's default
  special tokens (none for this project's tokenizer); an empty context is the BOS token (EOS without one);
- a pair longer than the model's window + 1 keeps its last window + 1 tokens (the context is cut from the left);
- a score is the summed log-probability of the continuation's tokens.

Speed. The vocabulary projection is most of a small model's cost (depth 2, width 128, 32k vocabulary: ten
times the blocks), and only the continuation's positions need it: the blocks run on the whole input, the LM
head and the softmax only on the positions that predict a continuation token. lm-eval projects every position.
Two batchings (`batching`):
- "shared_context": the contexts of a chunk of distinct contexts run once, right-padded, and their KV cache is
  repeated for each continuation, which then runs alone (its positions continue the context's, the context's
  padding is masked): a question's context is computed once for its 4 answers;
- "padded": every (context, continuation) is one right-padded row; no cache, one forward per chunk.
RESULTS.md ("Evaluation") has both against lm-eval.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from components.model.load import load_pretrained

Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)


class LogLikelihood:
    """Scores (context, continuation) pairs with one causal LM; `window` is the model's context length."""

    def __init__(self, model, tokenizer, batch_tokens: int = 16384, batching: str = "shared_context"):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_tokens, self.batching = batch_tokens, batching
        self.window = model.config.max_position_embeddings
        self.prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.prefix_id
        self.blocks, self.head = model.base_model, model.get_output_embeddings()

    @classmethod
    def load(cls, model_dir: Path | str, **options) -> LogLikelihood:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = load_pretrained(AutoModelForCausalLM, model_dir)
        return cls(model, AutoTokenizer.from_pretrained(model_dir), **options)

    # --- tokenization -----------------------------------------------------------------------------------------

    def encode_pair(self, context: str, continuation: str) -> Pair:
        if not context:
            return [self.prefix_id], self.tokenizer.encode(continuation)
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        context_ids = self.tokenizer.encode(context)
        return context_ids, whole[len(context_ids):]

    def document_ids(self, text: str) -> list[int]:
        """A document as pretraining saw it: BOS, then its text (special-token strings stay text)."""
        return [self.prefix_id, *self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]]

    # --- scoring ----------------------------------------------------------------------------------------------

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Summed log-probability (nats) of each continuation given its context."""
        return self.score_ids([self.encode_pair(context, continuation) for context, continuation in pairs])

    def score_ids(self, pairs: Sequence[Pair]) -> np.ndarray:
        pairs = [self._truncate(context, continuation) for context, continuation in pairs]
        totals = np.zeros(len(pairs))
        run = self._shared_context_chunk if self.batching == "shared_context" else self._padded_chunk
        with torch.inference_mode():
            for chunk in self._chunks(pairs):
                totals[chunk] = run([pairs[i] for i in chunk])
        return totals

    def _truncate(self, context: list[int], continuation: list[int]) -> Pair:
        if not continuation or len(continuation) > self.window:
            raise ValueError(f"a continuation must have 1 to {self.window} tokens (the model's window), "
                             f"got {len(continuation)}")
        excess = len(context) + len(continuation) - (self.window + 1)
        return (context[excess:] if excess > 0 else context), continuation

    def _chunks(self, pairs: list[Pair]) -> list[list[int]]:
        """Indices of pairs per forward: longest contexts first (little padding), one context's pairs together,
        the padded size of each chunk within `batch_tokens`."""
        order = sorted(range(len(pairs)), key=lambda i: (-len(pairs[i][0]), pairs[i][0], -len(pairs[i][1])))
        chunks, current, longest = [], [], 0
        for i in order:
            longest = max(longest, len(pairs[i][0]) + len(pairs[i][1]))
            if current and longest * (len(current) + 1) > self.batch_tokens:
                chunks.append(current)
                current, longest = [], len(pairs[i][0]) + len(pairs[i][1])
            current.append(i)
        return chunks + [current] if current else chunks

    def _padded_chunk(self, pairs: list[Pair]) -> np.ndarray:
        rows = [context + continuation[:-1] for context, continuation in pairs]
        hidden = self.blocks(input_ids=self._pad(rows), use_cache=False).last_hidden_state
        row, position, target, owner = [], [], [], []
        for i, (context, continuation) in enumerate(pairs):
            for j, token in enumerate(continuation):  # position len(context)-1+j predicts continuation[j]
                row.append(i), position.append(len(context) - 1 + j), target.append(token), owner.append(i)
        return self._sums(hidden[row, position], target, owner, len(pairs))

    def _shared_context_chunk(self, pairs: list[Pair]) -> np.ndarray:
        contexts: dict[tuple[int, ...], int] = {}
        group = [contexts.setdefault(tuple(context), len(contexts)) for context, _ in pairs]
        context_rows = [list(context) for context in contexts]
        lengths = torch.tensor([len(row) for row in context_rows])
        out = self.blocks(input_ids=self._pad(context_rows), use_cache=True)
        last = out.last_hidden_state[torch.arange(len(context_rows)), lengths - 1]
        first = self._log_probs(last[group], [continuation[0] for _, continuation in pairs])
        totals = first.double().numpy()
        longer = [i for i, (_, continuation) in enumerate(pairs) if len(continuation) > 1]
        if not longer:  # one-token answers (" A", " B", ...): the context's last position scored them all
            return totals
        cache = out.cache
        cache.reorder_cache(torch.tensor([group[i] for i in longer]))  # each continuation gets its context's cache
        rows = [pairs[i][1][:-1] for i in longer]
        width = max(map(len, rows))
        context_mask = (torch.arange(lengths.max())[None] < lengths[:, None]).long()[[group[i] for i in longer]]
        position_ids = lengths[[group[i] for i in longer]][:, None] + torch.arange(width)[None]
        hidden = self.blocks(input_ids=self._pad(rows), cache=cache, use_cache=False,
                             attention_mask=torch.cat([context_mask, torch.ones_like(position_ids)], 1),
                             position_ids=position_ids).last_hidden_state
        row, position, target, owner = [], [], [], []
        for r, i in enumerate(longer):
            for j, token in enumerate(pairs[i][1][1:]):  # continuation position j predicts continuation[j+1]
                row.append(r), position.append(j), target.append(token), owner.append(i)
        return totals + self._sums(hidden[row, position], target, owner, len(pairs))

    def _pad(self, rows: list[list[int]]) -> torch.Tensor:
        # Right padding: causal attention keeps every real position blind to the padding after it.
        batch = torch.full((len(rows), max(map(len, rows))), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            batch[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        return batch

    def _log_probs(self, hidden: torch.Tensor, targets: list[int]) -> torch.Tensor:
        logits = self.head(hidden).float()
        return logits.log_softmax(-1)[torch.arange(len(targets)), torch.tensor(targets)]

    def _sums(self, hidden: torch.Tensor, targets: list[int], owners: list[int], count: int) -> np.ndarray:
        totals = np.zeros(count)
        np.add.at(totals, owners, self._log_probs(hidden, targets).double().numpy())
        return totals
