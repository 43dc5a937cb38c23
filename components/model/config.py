"""A Llama-style decoder (RMSNorm, RoPE, SwiGLU, no biases) whose sizes all follow from one dial, `depth`.

As in nanochat, only the number of layers is chosen; width, heads and the MLP's hidden size are derived, so a
sweep over `depth` is a sweep over model size with the shape kept in proportion. The model is a plain
`transformers.LlamaForCausalLM`: nothing here knows about parallelism, optimizers or the training loop.
"""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from components.model.params import ModelParams


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
