"""A behaviour check that means something even at tiny scale: does the model end its turn?

A base model has never seen the chat template's `<|im_end|>`: asked in ChatML, it rambles on until the token
budget runs out. SFT trains that stop token on every assistant turn, so the share of replies that end with
it within `max_new_tokens` must rise. Both models answer the same held-out prompts with greedy decoding
(deterministic, so before and after compare), and generation may stop at either stop token; a reply counts as
stopped by the template only when it ended with `<|im_end|>`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch

from components.evaluate.stats import wilson
from components.model.load import load_pretrained

IM_END, EOT = "<|im_end|>", "<|end_of_text|>"


@dataclass(frozen=True)
class Generation:
    prompt: list[dict]  # the conversation up to the reply
    reply: str
    new_tokens: int
    stopped_by: str | None  # "<|im_end|>", "<|end_of_text|>", or None when the budget ran out


def held_out_prompts(data_dir: Path, count: int) -> list[list[dict]]:
    """The first `count` prompts of a validation split: SFT conversations (`examples-val.parquet`) cut before
    their last assistant turn, or preference pairs' shared prompts (`pairs-val.parquet`, column `prompt`)."""
    examples, pairs = Path(data_dir) / "examples-val.parquet", Path(data_dir) / "pairs-val.parquet"
    if examples.exists():
        conversations = [json.loads(m) for m in pq.read_table(examples, columns=["messages"])
                         .column("messages").to_pylist()[:count]]
        return [turns[:max(i for i, turn in enumerate(turns) if turn["role"] == "assistant")]
                for turns in conversations]
    if pairs.exists():
        return [json.loads(p) for p in pq.read_table(pairs, columns=["prompt"]).column("prompt").to_pylist()[:count]]
    return []


@torch.no_grad()
def generate_replies(model_dir: Path, prompts: list[list[dict]], max_new_tokens: int, batch_size: int = 16,
                     temperature: float = 0.0, seed: int = 0) -> list[Generation]:
    """Replies of the model in `model_dir` to each prompt, stopping at `<|im_end|>` or end-of-text: greedy at
    temperature 0, else sampled (the same seed gives the same replies)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    model = load_pretrained(AutoModelForCausalLM, model_dir).eval()
    stops = {tokenizer.convert_tokens_to_ids(IM_END): IM_END, tokenizer.convert_tokens_to_ids(EOT): EOT}
    window = model.config.max_position_embeddings
    out = []
    for first in range(0, len(prompts), batch_size):
        batch = prompts[first:first + batch_size]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in batch]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False,
                            truncation=True, max_length=max(window - max_new_tokens, 1))
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature else {"do_sample": False}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + first)
            ids = model.generate(**encoded, max_new_tokens=max_new_tokens, eos_token_id=list(stops),
                                 pad_token_id=tokenizer.pad_token_id, **sampling)
        for prompt, row in zip(batch, ids[:, encoded["input_ids"].shape[1]:].tolist()):
            end = next((i for i, token in enumerate(row) if token in stops), None)
            reply = row if end is None else row[:end]
            out.append(Generation(prompt, tokenizer.decode(reply, skip_special_tokens=True), len(reply) + (end is not None),
                                  None if end is None else stops[row[end]]))
    return out


def stop_rates(generations: list[Generation]) -> dict[str, float]:
    """{stop_rate: share ending with <|im_end|>, with its 95% Wilson interval (stop_rate_low, stop_rate_high);
    stop_rate_any: with either stop token; mean_reply_tokens}."""
    n = max(len(generations), 1)
    stopped = sum(g.stopped_by == IM_END for g in generations)
    low, high = wilson(stopped, len(generations))
    return {"stop_rate": stopped / n, "stop_rate_low": low, "stop_rate_high": high,
            "stop_rate_any": sum(g.stopped_by is not None for g in generations) / n,
            "mean_reply_tokens": sum(g.new_tokens for g in generations) / n}


def write_samples(generations: list[Generation], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for generation in generations:
            f.write(json.dumps(asdict(generation), ensure_ascii=False) + "\n")
    return path
