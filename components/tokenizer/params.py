"""Parameters of the tokenizer stage (the `tokenizer` section of params.yaml)."""
from __future__ import annotations

from pydantic import Field

from components.params import StrictModel


class TokenizerParams(StrictModel):
    vocab_size: int = Field(
        4096, ge=512,
        description="tokens in the vocabulary, the 5 special tokens and 256 byte tokens included; "
                    "tiny preset 4096, gpu 32768, multi-node 128256 (Llama 3's size)")
    sample_chars: int = Field(
        5_000_000, gt=0, description="characters of the mix, a deterministic sample, the merges are learned from")
    min_frequency: int = Field(2, ge=1, description="a pair seen fewer times than this is never merged")
    heldout_fraction: float = Field(
        0.05, ge=0, lt=1, description="share of documents (by id hash) kept out of training, for the report")
    model_max_length: int = Field(
        2048, gt=0, description="the model's context length; transformers warns when an encoding is longer")
    seed: int = Field(1, description="salts the id hash that picks the sample and the held-out documents")
    roundtrip_docs: int | None = Field(
        100_000, gt=0, description="documents of the mix whose exact round trip the stage's gate checks "
                                   "(all of them when null; the tiny mix has ≈ 1,500)")
