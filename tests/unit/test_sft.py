"""The SFT objective on the DeepSpeed engine: the loss counts only the assistant's tokens, packing gives the
loss of the conversations one by one, every row is seen once per epoch, a mismatched tokenizer is refused,
and exact resume after kill -9 (the pretraining test's twin)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from components.model import ModelParams, build_model
from components.tokenizer import tokenizer_digest
from components.train import TrainConfig
from components.train.objectives.sft import IGNORE, DataMismatch, Objective, masked_loss_sum, pack
from interrupt import kill_after_checkpoint
from test_train import finish, launch, losses  # the rank-launching helpers of the pretraining twin

VOCAB, SEQ, PAD = 256, 64, 2


def conversation(rng, turns: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Ids and assistant mask of a made-up chat: each user turn is random ids, the assistant answers with the
    same ids plus one (learnable by construction) and a stop token; only the answers are trained."""
    ids, mask = [], []
    for _ in range(turns):
        user = rng.integers(10, 120, size=rng.integers(2, 6))
        ids += [3, *user, 4, 5]  # header, user text, end of turn, assistant header
        mask += [0] * (len(user) + 3)
        ids += [*(user + 1), 4]
        mask += [1] * (len(user) + 1)
    return np.array(ids + [1]), np.array(mask + [1], dtype=bool)


def write_examples(folder: Path, base: Path, count: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", count), ("val", 16)):
        chats = [conversation(rng, int(rng.integers(1, 4))) for _ in range(n)]
        table = pa.table({"input_ids": [c[0].astype(np.int32).tolist() for c in chats],
                          "assistant_mask": [c[1].astype(np.int8).tolist() for c in chats]})
        pq.write_table(table, folder / f"examples-{split}.parquet")
    (folder / "manifest.json").write_text(json.dumps({"tokenizer_digest": tokenizer_digest(base), "vocab_size": VOCAB}))
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    build_model(ModelParams(depth=2, aspect_ratio=32, head_dim=32, seq_len=SEQ), VOCAB, 0, 1, PAD, seed=1).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def examples(base, tmp_path_factory) -> Path:
    return write_examples(tmp_path_factory.mktemp("sft_data"), base)


def sft_config(base: Path, examples: Path, ckpt: Path, **overrides) -> dict:
    return {"objective": "sft", "init_from": str(base), "model": {"depth": 2, "aspect_ratio": 32, "head_dim": 32,
            "seq_len": SEQ}, "vocab_size": VOCAB, "tokenizer_digest": tokenizer_digest(base), "token_dir": str(examples),
            "ckpt_dir": str(ckpt), "steps": 12, "micro_batch": 2, "grad_accum": 2, "lr": 3e-3, "warmup": 2,
            "zero_stage": 2, "bf16": False, "keep_last": 2, "seed": 3, "log_every": 1, "pad_id": PAD, **overrides}


def test_only_the_assistant_tokens_are_targets(base, examples, tmp_path):
    rng = np.random.default_rng(5)
    chats = [conversation(rng) for _ in range(3)]
    rows = pack(chats, SEQ, PAD, packed=False)
    for row, (ids, mask) in enumerate(chats):
        trained = rows.labels[row] != IGNORE
        assert trained.sum() == mask[1:].sum() == rows.trained[row]
        # position t is trained exactly when token t+1 is the assistant's, and its target is that token
        assert (np.flatnonzero(trained) == np.flatnonzero(mask[1:])).all()
        assert (rows.labels[row][trained] == ids[1:][mask[1:]]).all()
    model = _model(base)
    batch = rows.take(np.arange(len(rows)))
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    by_hand = sum(F.cross_entropy(logits[r, t], batch["labels"][r, t], reduction="sum")
                  for r in range(len(rows)) for t in range(SEQ) if batch["labels"][r, t] != IGNORE)
    with torch.no_grad():
        assert masked_loss_sum(model, batch).item() == pytest.approx(by_hand.item(), rel=1e-5)


def _model(base: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()


def test_packed_rows_give_the_loss_of_the_conversations_one_by_one(base):
    rng = np.random.default_rng(7)
    chats = [conversation(rng, int(rng.integers(1, 4))) for _ in range(12)]
    packed, single = pack(chats, SEQ, PAD), pack(chats, SEQ, PAD, packed=False)
    assert len(packed) < len(single) == 12  # several per row, or the test shows nothing
    model = _model(base)
    with torch.no_grad():
        together = masked_loss_sum(model, packed.take(np.arange(len(packed)))).item()
        alone = sum(masked_loss_sum(model, single.take(np.arange(i, i + 1))).item() for i in range(12))
        # and without any padding at all: each conversation as a batch of its own length
        bare = 0.0
        for ids, mask in chats:
            logits = model(input_ids=torch.from_numpy(ids)[None]).logits[0, :-1]
            bare += F.cross_entropy(logits[torch.from_numpy(mask[1:])], torch.from_numpy(ids[1:][mask[1:]]),
                                    reduction="sum").item()
    assert packed.trained.sum() == single.trained.sum()
    assert together == pytest.approx(alone, rel=1e-5) and together == pytest.approx(bare, rel=1e-5)


def test_an_epoch_visits_every_row_once_and_the_step_mean_is_over_all_its_tokens(base, examples, tmp_path):
    cfg = TrainConfig(**sft_config(base, examples, tmp_path / "ck", micro_batch=3, grad_accum=2))
    objective = Objective(cfg)
    rows = objective.rows("train")
    world, per_step = 2, 3 * 2 * 2
    batchers = [objective.train_batches(rank, world) for rank in range(world)]
    seen, epoch_steps = [], len(rows) // per_step
    for step in range(epoch_steps):
        trained = 0
        for micro in range(2):
            for batcher in batchers:
                batch = batcher(step, micro)
                seen += [tuple(row) for row in batch["input_ids"].tolist()]
                trained += int((batch["labels"] != IGNORE).sum())
                assert batch["scale"].item() == pytest.approx(2 * world / step_trained(batchers, step, world))
        assert trained == step_trained(batchers, step, world)
    everything = [tuple(row) for row in rows.input_ids.tolist()]
    assert len(seen) == len(set(seen)) == epoch_steps * per_step  # no row twice within the epoch
    assert set(seen) <= set(everything)
    again = objective.train_batches(0, world)(1, 1)
    assert all((again[key] == batchers[0](1, 1)[key]).all() for key in again)  # a pure function of (step, micro)


def step_trained(batchers, step: int, world: int) -> int:
    return sum(int((b(step, m)["labels"] != IGNORE).sum()) for b in batchers for m in range(2))


def test_examples_of_another_tokenizer_are_refused_with_the_reason(base, examples, tmp_path):
    other = tmp_path / "other"
    write_examples(other, base)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(manifest | {"tokenizer_digest": "0123456789abcdef"}))
    with pytest.raises(DataMismatch, match="tokenized with tokenizer 0123456789ab.*sft_data.tokenizer"):
        Objective(TrainConfig(**sft_config(base, other, tmp_path / "ck")))
    with pytest.raises(ValueError, match="longer than the 8-token rows"):
        Objective(TrainConfig(**sft_config(base, examples, tmp_path / "ck", model={"seq_len": 8}))).rows("train")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills ranks through /proc")
def test_sft_resume_after_kill_9_gives_the_uninterrupted_losses(base, examples, tmp_path):
    def config_file(ckpt: Path, **overrides) -> Path:
        path = ckpt.with_suffix(".json")
        path.write_text(json.dumps(sft_config(base, examples, ckpt, **overrides)))
        return path

    whole = tmp_path / "whole"
    result = finish(launch(config_file(whole, val_batches=4)), timeout=300)
    expected = losses(whole)
    assert sorted(expected) == list(range(1, 13)) and result["resumed_from"] == 0
    assert expected[12] < expected[1] and "val_loss" in result  # it learns the answers

    broken = tmp_path / "broken"
    proc = launch(config_file(broken, ckpt_every=4, step_pause_s=0.5))
    kill_after_checkpoint(proc, broken)
    assert max(losses(broken)) < 12  # it really was interrupted

    resumed = finish(launch(config_file(broken, ckpt_every=4)), timeout=300)
    assert resumed["resumed_from"] == 8 and resumed["tokens"] == result["tokens"]
    got = losses(broken)
    for step in range(1, 13):
        assert got[step] == pytest.approx(expected[step], abs=5e-7), (step, got[step], expected[step])
