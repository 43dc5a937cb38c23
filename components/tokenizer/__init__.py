"""The tokenizer stage: a byte-level BPE tokenizer learned from the mix, and a report on held-out text.

The saved folder is what every later stage uses: `transformers.AutoTokenizer.from_pretrained(folder)`
loads it with its ChatML chat template; `load(folder)` gives the bare `tokenizers.Tokenizer` for fast
batch encoding; `tokenizer_digest(folder)` names its content.
"""
from components.tokenizer.params import TokenizerParams
from components.tokenizer.report import report
from components.tokenizer.train import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    heldout_texts,
    load,
    tokenizer_digest,
    train_tokenizer,
)

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "TokenizerParams", "heldout_texts", "load", "report",
           "tokenizer_digest", "train_tokenizer"]
