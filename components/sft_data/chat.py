"""Conversations → the token ids a chat model trains on, and the mask of the tokens it learns to say.

The text is the tokenizer's own chat template applied to the messages, its trailing whitespace cut, and the
tokenizer's EOS appended (the pipeline's tokenizer: ChatML, `<|im_start|>role\\ncontent<|im_end|>\\n` per
message, the last one ending `<|im_end|><|end_of_text|>`). The EOS follows the last stop token directly, not
the newline the template writes after it: trained after a newline, end-of-text competes with the first token
of every reply (which also follows a newline, "assistant\\n"), and a small model learns to answer every prompt
with an immediate end-of-text (the tiny pipeline's first SFT model did).

Trained (mask 1): each assistant reply and its turn's stop token (`<|im_end|>`), and the final EOS. Not trained:
role headers, the whitespace after a stop token, system and user turns. The spans are found in characters, by
rendering the conversation up to each assistant turn with and without the generation prompt (any template
that renders a conversation's turns as prefixes of the whole works), and mapped to tokens through the fast
tokenizer's offsets, so BPE boundaries cannot shift them: a token is trained when its characters overlap a
trained span (a token that straddles a header and the reply is trained rather than losing the reply's start).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Encoded(NamedTuple):
    input_ids: list[int]
    assistant_mask: list[int]


class TemplateError(ValueError):
    """The tokenizer cannot render conversations in a way whose assistant tokens can be located."""


def load_tokenizer(folder: Path | str):
    """The fast Hugging Face tokenizer of a tokenizer or model folder, with a chat template and an EOS token
    (TemplateError says what is missing). A folder, not a hub id: the manifest records the digest of its files."""
    from transformers import AutoTokenizer

    if not Path(folder).is_dir():
        raise TemplateError(f"tokenizer {folder}: not a folder (a Hugging Face tokenizer or model folder)")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    missing = [what for what, ok in (("a fast tokenizer (offsets)", tokenizer.is_fast),
                                     ("a chat template", bool(tokenizer.chat_template)),
                                     ("an EOS token", tokenizer.eos_token is not None)) if not ok]
    if missing:
        raise TemplateError(f"tokenizer {folder}: SFT data needs {' and '.join(missing)}")
    return tokenizer


def special_text(tokenizer) -> re.Pattern:
    """Matches the tokenizer's special tokens written as text. A reply containing "<|im_end|>" would be
    tokenized as a real stop token and end its turn early, so such examples are dropped (counted)."""
    tokens = sorted((token.content for token in tokenizer.added_tokens_decoder.values() if token.special),
                    key=len, reverse=True)
    return re.compile("|".join(map(re.escape, tokens)) or r"(?!)")


def encode(tokenizer, messages: list[dict], last_reply_only: bool = False) -> Encoded:
    """The ids of the templated conversation + EOS, and 1 for each token that overlaps a trained span. With
    `last_reply_only`, only the last assistant turn and the EOS are trained: the earlier turns are context (a
    preference pair compares two last replies)."""
    text, trained = render(tokenizer, messages)
    if last_reply_only:
        trained = trained[-2:]  # the spans are in order: the assistant turns, then the EOS
    # verbose=False: conversations longer than the model are expected here (max_seq_len drops them), not a mistake
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    mask = np.zeros(len(offsets), dtype=bool)
    for start, end in trained:
        mask |= (offsets[:, 0] < end) & (offsets[:, 1] > start)
    return Encoded(list(encoding["input_ids"]), mask.astype(int).tolist())


def render(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The templated conversation with the EOS appended, and the character spans that are trained."""
    def template(turns: list[dict], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)

    full = template(messages, False)
    spans = []
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = template(messages[:turn], True)  # ends where the reply starts
        through = template(messages[:turn + 1], False).rstrip()  # ends with the turn's stop token
        if not (full.startswith(through) and through.startswith(before)
                and through[len(before):].startswith(message["content"])):
            raise TemplateError("the chat template does not render a conversation's turns as prefixes of the "
                                "whole, so the assistant's tokens cannot be located")
        spans.append((len(before), len(through)))
    full = full.rstrip()  # the EOS follows the last stop token itself (see the module's docstring)
    text = full + tokenizer.eos_token
    spans.append((len(full), len(text)))
    return text, spans
