"""The model component: the depth dial, parameter and FLOP counts, and the Hugging Face export."""
from __future__ import annotations

import os

for _var in ("DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import pytest
import torch
from pydantic import ValidationError
from tokenizers import pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from components.model import (
    ModelParams,
    build_model,
    describe,
    export_hf,
    flops_per_token,
    llama_config,
    parameter_count,
)
from components.tokenizer import SPECIAL_TOKENS, TokenizerParams
from components.tokenizer.train import new_tokenizer, save

VOCAB = 512
BOS, EOS, PAD = 0, 1, 2  # the ids SPECIAL_TOKENS get


def tiny(**overrides) -> ModelParams:
    return ModelParams(**{"depth": 2, "aspect_ratio": 32, "head_dim": 16, "seq_len": 32, **overrides})


def test_depth_dial_derives_the_shape():
    widths = []
    for depth in (4, 8, 12):
        params = ModelParams(depth=depth)
        assert params.width % params.head_dim == 0
        assert params.n_heads * params.head_dim == params.width
        assert params.ffn_hidden % 64 == 0 and abs(params.ffn_hidden - 8 * params.width / 3) < 64
        widths.append(params.width)
    assert widths == sorted(set(widths)) and ModelParams(depth=4).width == 256
    assert ModelParams(depth=5, aspect_ratio=50).width == 256  # 250 rounded up to a multiple of 64


def test_gqa_and_invalid_ratio():
    params = ModelParams(depth=8, kv_heads_ratio=4)
    config = llama_config(params, VOCAB, BOS, EOS, PAD)
    assert (config.num_attention_heads, config.num_key_value_heads) == (8, 2)
    with pytest.raises(ValidationError):
        ModelParams(depth=4, kv_heads_ratio=3)  # 4 heads
    with pytest.raises(ValidationError):
        ModelParams(depth=4, n_layers=4)  # derived sizes and typos are not settable


@pytest.mark.parametrize("kv_heads_ratio", [1, 2])
def test_architecture_is_llama_without_biases(kv_heads_ratio):
    model = build_model(tiny(kv_heads_ratio=kv_heads_ratio), VOCAB, BOS, EOS, PAD)
    names = [name for name, _ in model.named_parameters()]
    assert not [name for name in names if "bias" in name]
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None]
    assert sum(isinstance(m, LlamaRMSNorm) for m in model.modules()) == 2 * 2 + 1
    assert not [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    mlp = model.model.layers[0].mlp
    assert {"gate_proj", "up_proj", "down_proj"} <= {name for name, _ in mlp.named_children()}
    assert model.config.hidden_act == "silu"
    assert model.config.rope_parameters["rope_theta"] == 10000.0


def test_build_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(tiny(), VOCAB, BOS, EOS, PAD, seed=7)
    assert torch.equal(torch.rand(3), expected)
    b = build_model(tiny(), VOCAB, BOS, EOS, PAD, seed=7)
    c = build_model(tiny(), VOCAB, BOS, EOS, PAD, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_depth_scaled_init_shrinks_only_the_residual_projections():
    depth = 8
    plain = build_model(tiny(depth=depth, aspect_ratio=16), VOCAB, BOS, EOS, PAD, seed=7)
    scaled = build_model(tiny(depth=depth, aspect_ratio=16, depth_scaled_init=True), VOCAB, BOS, EOS, PAD, seed=7)
    expected_std = plain.config.initializer_range / (2 * depth) ** 0.5
    for name, weight in scaled.named_parameters():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            assert weight.std().item() == pytest.approx(expected_std, rel=0.1), name
        else:  # everything else drawn as before, from the same seed
            assert torch.equal(weight, dict(plain.named_parameters())[name]), name
    again = build_model(tiny(depth=depth, aspect_ratio=16, depth_scaled_init=True), VOCAB, BOS, EOS, PAD, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(scaled.parameters(), again.parameters()))


@pytest.mark.parametrize("tie", [False, True])
def test_parameter_count_matches_the_built_model(tie):
    model = build_model(tiny(tie_embeddings=tie, kv_heads_ratio=2), VOCAB, BOS, EOS, PAD)
    count = parameter_count(model.config)
    assert count["total"] == sum(p.numel() for p in model.parameters())  # parameters() dedups a tied head
    assert count["embedding"] == model.model.embed_tokens.weight.numel()
    assert count["lm_head"] == (0 if tie else VOCAB * model.config.hidden_size)
    assert count["total"] == count["embedding"] + count["non_embedding"]
    if tie:
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_flops_by_hand():
    # depth 2, width 64, 4 heads of 16, kv 2 heads, SwiGLU hidden 192 (8/3*64 = 170.7 -> 192), vocab 512
    config = llama_config(tiny(kv_heads_ratio=2), VOCAB, BOS, EOS, PAD)
    assert (config.hidden_size, config.intermediate_size, config.num_key_value_heads) == (64, 192, 2)
    layer = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 192  # q, k, v, o; gate, up, down
    n = 2 * layer + 512 * 64  # + LM head
    flops = flops_per_token(config, seq_len=32)
    assert flops["matmul_params"] == n
    assert flops["attention"] == 12 * 2 * 32 * 64
    assert flops["train"] == 6 * n + 12 * 2 * 32 * 64
    assert flops["forward"] == 2 * n + 4 * 2 * 32 * 64
    # tying the head does not remove its matmul
    tied = llama_config(tiny(kv_heads_ratio=2, tie_embeddings=True), VOCAB, BOS, EOS, PAD)
    assert flops_per_token(tied, 32)["train"] == flops["train"]


def test_flops_dense_dominates_short_and_attention_grows_linearly():
    config = llama_config(ModelParams(depth=12), 32768, BOS, EOS, PAD)
    short = flops_per_token(config, 256)
    assert short["attention"] < 0.05 * short["dense"]
    at = {seq: flops_per_token(config, seq) for seq in (512, 1024, 2048)}
    assert at[2048]["attention"] == 2 * at[1024]["attention"] == 4 * at[512]["attention"]
    assert len({f["dense"] for f in at.values()}) == 1
    assert at[2048]["train"] == 3 * at[2048]["forward"]


def test_describe_table():
    table = describe(ModelParams(depth=4), 4096, seq_len=2048)
    assert "| width | 256 |" in table and "seq 2048" in table
    assert f"{parameter_count(llama_config(ModelParams(depth=4), 4096, 0, 1, 2))['total']:,}" in table


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tiny byte-level BPE folder, saved the way the tokenizer stage saves it."""
    text = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
            "nothing to do: once or twice she had peeped into the book her sister was reading. ") * 20
    tokenizer = new_tokenizer()
    tokenizer.train_from_iterator([text], trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    out = tmp_path_factory.mktemp("tokenizer")
    save(tokenizer, out, TokenizerParams(vocab_size=512, model_max_length=32), {})
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    return out


def test_export_round_trip(tokenizer_dir, tmp_path):
    model = build_model(tiny(kv_heads_ratio=2), VOCAB, BOS, EOS, PAD).eval()
    out = export_hf(model, tokenizer_dir, tmp_path / "hf", extra_card="## Training\n\nUnit test.")
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "## Training" in card and "| width | 64 |" in card

    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    batch = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(batch).logits, loaded(batch).logits, atol=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS, EOS, PAD)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(prompt)["input_ids"]
    assert max(ids) < VOCAB and 3 in ids and 4 in ids


def test_export_refuses_a_mismatched_tokenizer(tokenizer_dir, tmp_path):
    model = build_model(tiny(), VOCAB, bos_id=1, eos_id=0, pad_id=PAD)  # ids swapped
    with pytest.raises(ValueError, match="bos token"):
        export_hf(model, tokenizer_dir, tmp_path / "hf")
    small = build_model(tiny(), 64, BOS, EOS, PAD)  # vocabulary smaller than the tokenizer's
    with pytest.raises(ValueError, match="vocabulary"):
        export_hf(small, tokenizer_dir, tmp_path / "hf2")
    assert not (tmp_path / "hf").exists()
