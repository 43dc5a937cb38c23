"""Pretraining at GPU scale, what a CPU can check: epochs of non-overlapping windows, the chunked loss, per-block
compilation, and the cheap contract check a rank makes at start-up (issue 16)."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.model import ModelParams, build_model
from components.tokenize import ContractError, require_compatible
from components.tokenize.contract import check_contract, record_verdict
from components.train import TokenWindows, split_shards
from components.train.objectives.causal_lm import chunked_token_losses, token_losses
from interrupt import kill_after_checkpoint
from test_train import DIGEST, EOT, SEQ, VOCAB, config, finish, launch, losses, write_shards


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("tokens"))


# --- item 7: every window once per epoch ---

def epoch_starts(shards, world: int, grad_accum: int, micro_batch: int, steps: int) -> list[list[int]]:
    """The window starts of each step, over all ranks and micro-batches."""
    ranks = [TokenWindows(shards, SEQ, micro_batch, seed=5, rank=r, world=world, grad_accum=grad_accum)
             for r in range(world)]
    return [sorted(int(s) for w in ranks for micro in range(grad_accum) for s in w.starts(step, micro))
            for step in range(steps)]


def test_one_epoch_visits_every_window_exactly_once(tokens):
    shards = split_shards(tokens, "train")
    windows = TokenWindows(shards, SEQ, 2, seed=5)
    count = windows.count
    assert count == (windows.stream.size - 1) // SEQ
    per_step = 2 * 2 * 2  # micro-batch × grad_accum × world
    steps = count // per_step
    visited = [s for step in epoch_starts(shards, 2, 2, 2, steps) for s in step]
    assert len(visited) == len(set(visited)) == steps * per_step  # no window twice within the epoch
    assert set(visited) <= set(range(0, count * SEQ, SEQ))  # windows share only their edge id
    whole_epoch = [int(s) for g in range(count) for s in windows.sampler.take(g, 1) * SEQ]
    assert sorted(whole_epoch) == list(range(0, count * SEQ, SEQ))  # every window, once
    next_epoch = [int(s) for s in windows.sampler.take(count, count) * SEQ]
    assert sorted(next_epoch) == sorted(whole_epoch) and next_epoch != whole_epoch  # reshuffled per epoch


def test_a_step_draws_the_same_windows_on_any_world_size_of_the_same_global_batch(tokens):
    """What lets a run resume on fewer ranks: the samples of a step depend on the global batch only."""
    shards = split_shards(tokens, "train")
    assert epoch_starts(shards, 2, 1, 4, 6) == epoch_starts(shards, 1, 2, 4, 6) == epoch_starts(shards, 4, 1, 2, 6)


# --- item 3: the chunked loss ---

def tiny_model(vocab: int = 1000, depth: int = 2):
    return build_model(ModelParams(depth=depth, aspect_ratio=32, head_dim=32, seq_len=SEQ), vocab, 0, 1, 2, seed=1)


def plain_losses(model, input_ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=input_ids[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.float().flatten(0, 1), input_ids[:, 1:].flatten(), reduction="none").view(
        input_ids.shape[0], -1)


def loss_and_grads(model, losses_of, input_ids):
    model.zero_grad()
    losses = losses_of(model, input_ids)
    losses.mean().backward()
    return losses.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("tie", [False, True])
def test_chunked_loss_equals_the_plain_loss_and_its_gradients(tie):
    model = build_model(ModelParams(depth=2, aspect_ratio=32, head_dim=32, seq_len=SEQ, tie_embeddings=tie), 1000,
                        0, 1, 2, seed=1)
    input_ids = torch.randint(0, 1000, (3, SEQ + 1), generator=torch.Generator().manual_seed(0))
    expected, expected_grads = loss_and_grads(model, plain_losses, input_ids)
    # 7 tokens per chunk: 96 tokens in 14 chunks, the last one short
    got, grads = loss_and_grads(model, lambda m, x: token_losses(m, x, chunk_elements=7 * 1000), input_ids)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-5, msg=f"gradient of {name}")
    with torch.no_grad():  # validation: no recomputation, same numbers; `loss: plain` (None): one chunk
        torch.testing.assert_close(token_losses(model, input_ids, chunk_elements=7 * 1000), expected)
        torch.testing.assert_close(token_losses(model, input_ids, chunk_elements=None), expected)


def test_chunks_never_hold_more_than_their_share_of_logits():
    """The head sees at most `chunk_elements` logits at a time, in the forward and in the recomputing backward."""
    head = torch.nn.Linear(16, 1000, bias=False)
    shapes = []
    head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    hidden = torch.randn(2, 50, 16, requires_grad=True)
    chunked_token_losses(head, hidden, torch.randint(0, 1000, (2, 50)), chunk_elements=32 * 1000).sum().backward()
    assert max(rows for rows, _ in shapes) == 32 and sum(rows for rows, _ in shapes) == 2 * 100  # forward + recompute


# --- item 2: per-block compilation ---

@pytest.mark.heavy  # inductor compiles a block in 1-4 minutes on the 2 shared cores
def test_compiled_blocks_give_the_eager_loss_and_see_no_mask():
    from components.train.engine import compile_blocks

    eager = tiny_model()
    compiled = copy.deepcopy(eager)
    masks = []
    compiled.model.layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True)
    assert len(compile_blocks(compiled)) == 2
    assert [name for name, _ in compiled.named_parameters()] == [name for name, _ in eager.named_parameters()]
    input_ids = torch.randint(0, 1000, (2, SEQ + 1), generator=torch.Generator().manual_seed(0))
    expected, expected_grads = loss_and_grads(eager, token_losses, input_ids)
    got, grads = loss_and_grads(compiled, token_losses, input_ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=f"gradient of {name}")
    # the mask is made outside the compiled blocks, eagerly: SDPA gets is_causal and no T×T mask (flash-eligible)
    assert masks and all(mask is None for mask in masks)


# --- item 1: the start-up contract check ---

def test_a_rank_trusts_the_recorded_verdict_and_checks_only_what_is_cheap(tokens, tmp_path):
    out = tmp_path / "tokens"
    shutil.copytree(tokens, out)
    assert record_verdict(out, check_contract(out, VOCAB, DIGEST, EOT)) == []
    assert json.loads((out / "contract.json").read_text())["violations"] == []
    shard = out / "train-00000.bin"
    ids = np.fromfile(shard, dtype=np.uint16)
    ids[3] = VOCAB + 7  # an out-of-range id at the same size: only the full check's pass over the tokens sees it
    ids.tofile(shard)
    assert require_compatible(out, VOCAB, DIGEST)["vocab_size"] == VOCAB  # trusted: no token was read

    with pytest.raises(ContractError, match="rule 'tokenizer digest': expected sha256:another"):
        require_compatible(out, VOCAB, "sha256:another")
    ids[:-5].tofile(shard)  # truncated: the size no longer matches the manifest's count
    with pytest.raises(ContractError, match=r"train-00000.bin: rule 'size': expected \d+ bytes"):
        require_compatible(out, VOCAB, DIGEST)
    (out / "train-00001.idx.npy").unlink()
    with pytest.raises(ContractError, match="train-00001.bin: rule 'index'"):
        require_compatible(out, VOCAB, DIGEST)


def test_a_verdict_of_another_manifest_or_with_broken_rules_is_not_trusted(tokens, tmp_path):
    out = tmp_path / "tokens"
    shutil.copytree(tokens, out)
    record_verdict(out, check_contract(out, VOCAB, DIGEST, EOT))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["seed"] = 1  # another manifest: the recorded verdict no longer applies, the full check runs
    (out / "manifest.json").write_text(json.dumps(manifest))
    shard = out / "val-00000.bin"
    ids = np.fromfile(shard, dtype=np.uint16)
    ids[0] = VOCAB + 1
    ids.tofile(shard)
    with pytest.raises(ContractError, match="val-00000.bin: rule 'ids below vocab size'"):
        require_compatible(out, VOCAB, DIGEST)
    record_verdict(out, check_contract(out, VOCAB, DIGEST, EOT))  # the stage's own verdict says no
    with pytest.raises(ContractError, match=r"recorded verdict \(contract.json\): val-00000.bin: rule 'ids below"):
        require_compatible(out, VOCAB, DIGEST)


# --- item 8: a checkpoint of 2 ranks resumed on 1 ---

@pytest.mark.heavy  # three launches of 12 steps: 2-3 minutes on a quiet machine, far more under load
def test_a_run_checkpointed_on_2_ranks_resumes_on_1_and_continues_the_loss_curve(tokens, tmp_path):
    whole = tmp_path / "whole"
    finish(launch(config(tokens, whole)))  # 2 ranks × micro-batch 4 × grad_accum 2: a global batch of 16
    expected = losses(whole)
    broken = tmp_path / "broken"
    kill_after_checkpoint(launch(config(tokens, broken, ckpt_every=4, step_pause_s=0.5)), broken, timeout=600)
    with pytest.raises(AssertionError, match="choose micro_batch and grad_accum with micro_batch × grad_accum = 16"):
        finish(launch(config(tokens, broken, ckpt_every=4), ranks=1))  # 1 rank, global batch 8: refused
    resumed = finish(launch(config(tokens, broken, ckpt_every=4, grad_accum=4), ranks=1))  # global batch 16
    assert resumed["resumed_from"] == 8 and resumed["world"] == 1
    got = losses(broken)
    for step in range(9, 13):  # the same windows at the same steps; only the reduction order differs
        assert got[step] == pytest.approx(expected[step], abs=1e-4), (step, got[step], expected[step])
    assert resumed["final_loss"] < expected[1]
    assert sorted(p.name for p in broken.glob("step-*")) == ["step-12", "step-8"]  # the universal copy is gone
