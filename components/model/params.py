"""The model's one dial and the sizes it derives; plain pydantic, so reading params does not import torch."""
from __future__ import annotations

from pydantic import Field, model_validator

from components.params import StrictModel


class ModelParams(StrictModel):
    depth: int = Field(
        4, ge=1,
        description="the one size dial: transformer layers; width = depth * aspect_ratio (rounded up to a "
                    "multiple of head_dim), heads = width / head_dim, SwiGLU hidden ≈ 8/3 width. "
                    "Presets, with a 32k vocabulary, untied: tiny depth 4 (width 256, 20M, CPU tests); gpu depth "
                    "12-16 (width 768-1024, 134M-270M; depth 24 is 780M); multi-node depth 32+ "
                    "(width 2048, 1.75B)")
    aspect_ratio: int = Field(
        64, ge=1, description="width per layer: 64 keeps the shape of GPT-2/Llama-class models (d/L ≈ 64-128)")
    head_dim: int = Field(64, ge=8, description="channels per attention head; 64 for small models, 128 for ≥ 7B")
    kv_heads_ratio: int = Field(
        1, ge=1, description="query heads per key/value head (GQA): 1 is plain multi-head attention; "
                             "4-8 shrinks the KV cache at inference for ≥ 1B models")
    seq_len: int = Field(256, ge=8, description="context length in tokens (RoPE needs no learned positions); "
                                                "tiny 256, gpu 2048, multi-node 4096-8192")
    tie_embeddings: bool = Field(
        False, description="share the input embedding with the LM head: saves vocab*width parameters, "
                           "worth it only for small models where the embedding is a large share")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base; larger (500000, Llama 3) for long contexts")
    norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon")
    depth_scaled_init: bool = Field(
        False, description="initialise the projections that write into the residual stream (attention out, MLP "
                           "down) with std 0.02 / sqrt(2 * depth) instead of 0.02 (GPT-2, Megatron): the residual "
                           "stream's variance at init then stays the same at any depth")

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelParams:
        if self.n_heads % self.kv_heads_ratio:
            raise ValueError(f"kv_heads_ratio {self.kv_heads_ratio} must divide the {self.n_heads} heads "
                             f"that depth {self.depth} gives")
        return self

    # Derived sizes: properties, so params.yaml cannot set them out of proportion.
    @property
    def width(self) -> int:
        return -(-self.depth * self.aspect_ratio // self.head_dim) * self.head_dim  # rounded up

    @property
    def n_heads(self) -> int:
        return self.width // self.head_dim

    @property
    def n_kv_heads(self) -> int:
        return self.n_heads // self.kv_heads_ratio

    @property
    def ffn_hidden(self) -> int:
        # SwiGLU has three matrices, not two: 8/3 * width keeps its parameters at a 4*width GELU MLP's
        # (Shazeer 2020, Llama); a multiple of 64 keeps matmul tiles full.
        return -(-8 * self.width // (3 * 64)) * 64
