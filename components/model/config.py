"""A Llama-style decoder (RMSNorm, RoPE, SwiGLU, no biases) whose sizes all follow from one dial, `depth`.

As in nanochat, only the number of layers is chosen; width, heads and the MLP's hidden size are derived, so a
sweep over `depth` is a sweep over model size with the shape kept in proportion. The model is a plain
`transformers.LlamaForCausalLM`: nothing here knows about parallelism, optimizers or the training loop.
"""
from __future__ import annotations

import torch
from pydantic import Field, model_validator
from transformers import LlamaConfig, LlamaForCausalLM

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


def llama_config(params: ModelParams, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> LlamaConfig:
    """The `LlamaConfig` for `params`: RMSNorm, RoPE, SwiGLU, no biases."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=params.width, intermediate_size=params.ffn_hidden,
        num_hidden_layers=params.depth, num_attention_heads=params.n_heads,
        num_key_value_heads=params.n_kv_heads, head_dim=params.head_dim, hidden_act="silu",
        max_position_embeddings=params.seq_len, rms_norm_eps=params.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": params.rope_theta},
        tie_word_embeddings=params.tie_embeddings,
        attention_bias=False, mlp_bias=False,  # biases add little quality and complicate sharding
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)


def build_model(params: ModelParams, vocab_size: int, bos_id: int, eos_id: int, pad_id: int,
                seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised model (float32, on CPU); the same seed gives the same weights.

    The global RNG is forked, so building a model does not shift the random stream of whatever runs next."""
    config = llama_config(params, vocab_size, bos_id, eos_id, pad_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        if params.depth_scaled_init:
            scale_residual_projections(model)
        return model


@torch.no_grad()
def scale_residual_projections(model: LlamaForCausalLM) -> None:
    """Redraw each block's attention output and MLP down projections with std initializer_range / sqrt(2L):
    2L such matrices add into the residual stream, so each writes 1/(2L) of its variance at init."""
    std = model.config.initializer_range / (2 * model.config.num_hidden_layers) ** 0.5
    for layer in model.model.layers:
        for weight in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight):
            weight.normal_(0.0, std)


def model_params(config: LlamaConfig, seq_len: int | None = None) -> ModelParams:
    """The dial settings of an existing model (e.g. a base model to fine-tune), read back from its config."""
    return ModelParams(depth=config.num_hidden_layers, head_dim=config.head_dim,
                       aspect_ratio=config.hidden_size // config.num_hidden_layers,
                       kv_heads_ratio=config.num_attention_heads // config.num_key_value_heads,
                       seq_len=seq_len or config.max_position_embeddings, tie_embeddings=config.tie_word_embeddings,
                       rope_theta=config.rope_parameters["rope_theta"], norm_eps=config.rms_norm_eps)
