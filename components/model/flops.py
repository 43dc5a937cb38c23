"""Parameter and FLOP counts from a `LlamaConfig` alone, without building the model."""
from __future__ import annotations

from transformers import LlamaConfig

from components.model.config import llama_config
from components.model.params import ModelParams


def _layer_matmul_params(config: LlamaConfig) -> int:
    d, head_dim = config.hidden_size, config.head_dim
    attention = d * head_dim * (2 * config.num_attention_heads + 2 * config.num_key_value_heads)  # q,o + k,v
    mlp = 3 * d * config.intermediate_size  # gate, up, down
    return attention + mlp


def parameter_count(config: LlamaConfig) -> dict[str, int]:
    """{embedding, lm_head, non_embedding, total}.

    `embedding` is the input table; `lm_head` is the output matrix when it is not tied (0 when tied: it is
    the embedding then) and is part of `non_embedding`, which also holds the blocks and the norms."""
    d = config.hidden_size
    embedding = config.vocab_size * d
    lm_head = 0 if config.tie_word_embeddings else config.vocab_size * d
    norms = (2 * config.num_hidden_layers + 1) * d  # two RMSNorms per block, one before the head
    non_embedding = config.num_hidden_layers * _layer_matmul_params(config) + norms + lm_head
    return {"embedding": embedding, "lm_head": lm_head, "non_embedding": non_embedding,
            "total": embedding + non_embedding}


def flops_per_token(config: LlamaConfig, seq_len: int) -> dict[str, int]:
    """FLOPs per token of a sequence of `seq_len` tokens: {matmul_params, dense, attention, forward, train}.

    PaLM's accounting (Chowdhery et al. 2022, appendix B; also nanochat's `estimate_flops`), which extends
    Kaplan et al. 2020 (table 1, C ≈ 6N) with the attention scores:

        train   = 6·N + 12·L·T·(H·Q)
        forward = 2·N +  4·L·T·(H·Q)

    N = the weights of every matmul (the blocks' projections and the LM head; not the input embedding,
    a lookup, nor the norms); L layers, T = seq_len, H heads of Q channels. A weight costs 2 FLOPs per
    token forward (multiply, add) and 4 backward (gradients of input and weight), hence 2N and 6N. QKᵀ and
    the weighting of V each cost 2·T·H·Q per token and layer forward. The full T×T score matrix is counted,
    as PaLM does, though a causal kernel skips about half of it: MFU computed with this is comparable
    with the published numbers. GQA does not change the attention term: scores are per query head."""
    matmul = config.num_hidden_layers * _layer_matmul_params(config) + config.vocab_size * config.hidden_size
    attention = 4 * config.num_hidden_layers * seq_len * config.num_attention_heads * config.head_dim
    return {"matmul_params": matmul, "dense": 6 * matmul, "attention": 3 * attention,
            "forward": 2 * matmul + attention, "train": 6 * matmul + 3 * attention}


def describe(params: ModelParams, vocab_size: int, seq_len: int | None = None) -> str:
    """A Markdown table of the derived sizes, parameters and FLOPs per token, for the docs and model card."""
    config = llama_config(params, vocab_size, bos_id=0, eos_id=1, pad_id=2)
    seq = seq_len or params.seq_len
    count, flops = parameter_count(config), flops_per_token(config, seq)
    rows = [("depth (layers)", params.depth), ("width", params.width),
            ("heads / kv heads", f"{params.n_heads} / {params.n_kv_heads}"), ("head dim", params.head_dim),
            ("SwiGLU hidden", params.ffn_hidden), ("vocabulary", vocab_size), ("context", params.seq_len),
            ("tied embeddings", params.tie_embeddings),
            ("parameters, total", f"{count['total']:,} ({count['total'] / 1e6:.1f}M)"),
            ("parameters, non-embedding", f"{count['non_embedding']:,}"),
            (f"training FLOPs/token (seq {seq})", f"{flops['train']:.3e}"),
            (f"forward FLOPs/token (seq {seq})", f"{flops['forward']:.3e}")]
    return "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])
