"""The training core: the LR schedule's shape, the token windows, and exact resume after kill -9 on DeepSpeed."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

for _var in ("DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/llm-lifecycle/torch_extensions"))

import numpy as np
import pytest

from components.tokenize import require_compatible
from components.train import TokenWindows, decay_start, in_decay, lr_at, split_shards, val_batches

ROOT = Path(__file__).resolve().parents[2]
VOCAB, EOT, DIGEST = 256, 1, "test-digest"
SEQ = 32


# --- schedule ---

def test_wsd_warms_up_holds_and_decays_to_the_floor():
    total, peak, warmup = 100, 1e-3, 10
    lrs = [lr_at(s, total, peak, warmup, "wsd", decay_fraction=0.2, min_ratio=0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / warmup)
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    assert lrs[warmup - 1] == pytest.approx(peak)  # warmup ends at peak
    assert all(lr == peak for lr in lrs[warmup:80])  # stable
    assert all(a > b for a, b in zip(lrs[80:], lrs[81:]))  # decaying
    assert lrs[-1] == pytest.approx(0.1 * peak)  # ends at the floor
    sqrt = [lr_at(s, total, peak, warmup, "wsd", 0.2, 0.1, decay_shape="sqrt") for s in range(total)]
    assert sqrt[:80] == lrs[:80] and sqrt[-1] == pytest.approx(0.1 * peak)
    assert sqrt[85] < lrs[85]  # 1 - sqrt drops faster early in the decay
    assert [in_decay(s, total, warmup, 0.2) for s in (79, 80, 99)] == [False, True, True]
    assert decay_start(total, warmup, 0.2) == 80


def test_cosine_warms_up_then_falls_to_the_floor():
    total, peak, warmup = 50, 2e-3, 5
    lrs = [lr_at(s, total, peak, warmup, "cosine", min_ratio=0.1) for s in range(total)]
    assert lrs[warmup - 1] == pytest.approx(peak)
    assert all(a > b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    assert lrs[-1] == pytest.approx(0.1 * peak)
    with pytest.raises(ValueError):
        lr_at(0, 10, 1.0, 0, "linear")


# --- data ---

def write_shards(out: Path, seed: int = 0) -> Path:
    """Token shards in the tokenize stage's format (documents ending in the EOT, offsets, manifest), written
    directly: two train shards (windows must stitch across them), one val, one anneal."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for name, docs in [("train-00000", 40), ("train-00001", 30), ("val-00000", 10), ("anneal-00000", 20)]:
        lengths = rng.integers(10, 60, size=docs)
        # a repeating pattern per document plus noise: something a tiny model can learn in a few steps
        ids = [np.append((rng.integers(5, 40) + np.arange(n) % 7) % (VOCAB - 5) + 5, EOT) for n in lengths]
        tokens = np.concatenate(ids).astype(np.uint16)
        tokens.tofile(out / f"{name}.bin")
        np.save(out / f"{name}.idx.npy", np.concatenate([[0], np.cumsum(lengths + 1)]).astype(np.int64))
        shards.append({"name": f"{name}.bin", "split": name.split("-")[0], "dtype": "uint16",
                       "tokens": len(tokens), "documents": docs, "md5": hashlib.md5(tokens.tobytes()).hexdigest()})
    manifest = {"tokenizer_digest": DIGEST, "vocab_size": VOCAB, "dtype": "uint16", "eot_id": EOT, "seed": 0,
                "val_fraction": 0.1, "shards": shards}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    require_compatible(out, VOCAB, DIGEST)  # the format is the contract's, or the resume test means nothing
    return out


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("tokens"))


def test_batches_are_a_pure_function_of_step_micro_and_rank(tokens):
    shards = split_shards(tokens, "train")
    stream = np.concatenate([np.fromfile(p, dtype=np.uint16) for p in shards]).astype(np.int64)
    ranks = [TokenWindows(shards, SEQ, 4, seed=7, rank=r, world=2) for r in (0, 1)]
    again = TokenWindows(shards, SEQ, 4, seed=7, rank=0, world=2)
    first = ranks[0].batch(3, 0)
    assert first.shape == (4, SEQ + 1) and str(first.dtype) == "torch.int64"
    assert (first == again.batch(3, 0)).all()  # a fresh loader, same (seed, step, micro, rank): same batch
    assert not (first == ranks[0].batch(4, 0)).all()
    assert not (first == ranks[0].batch(3, 1)).all()
    assert not (first == ranks[1].batch(3, 0)).all()
    assert not (first == TokenWindows(shards, SEQ, 4, seed=8, rank=0, world=2).batch(3, 0)).all()
    for step in range(20):
        starts = [w.starts(step, 0) for w in ranks]
        for rank, windows in enumerate(ranks):
            batch = windows.batch(step, 0).numpy()
            assert batch.min() >= 0 and batch.max() < VOCAB
            for row, start in zip(batch, starts[rank]):
                assert 0 <= start <= len(stream) - (SEQ + 1)
                assert (row == stream[start:start + SEQ + 1]).all()  # also across the shard edge
    boundary = len(np.fromfile(shards[0], dtype=np.uint16))
    stitched = ranks[0].stream.read(boundary - 5, 10)
    assert (stitched == stream[boundary - 5:boundary + 5]).all()


def test_val_batches_cover_the_split_in_order(tokens):
    shards = split_shards(tokens, "val")
    stream = np.fromfile(shards[0], dtype=np.uint16).astype(np.int64)
    batches = list(val_batches(shards, SEQ, 2, max_batches=3))
    assert len(batches) == 3
    assert (batches[0][0].numpy() == stream[:SEQ + 1]).all()
    assert (batches[1][0].numpy() == stream[2 * SEQ:3 * SEQ + 1]).all()
    assert [len(list(val_batches(shards, SEQ, 2, 3, rank=r, world=2))) for r in (0, 1)] == [1, 1]  # equal counts
    assert [(b == c).all().item() for b, c in zip(batches, val_batches(shards, SEQ, 2, 3))] == [True] * 3


# --- DeepSpeed: exact resume after kill -9 ---

def config(tokens: Path, ckpt: Path, **overrides) -> Path:
    cfg = {"model": {"depth": 2, "aspect_ratio": 32, "head_dim": 32, "seq_len": SEQ}, "vocab_size": VOCAB,
           "tokenizer_digest": DIGEST, "token_dir": str(tokens), "ckpt_dir": str(ckpt), "steps": 12,
           "micro_batch": 4, "grad_accum": 2, "lr": 3e-3, "warmup": 2, "schedule": "wsd", "zero_stage": 2,
           "bf16": False, "ckpt_every": 0, "keep_last": 2, "seed": 3, "log_every": 1, **overrides}
    path = ckpt.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    return path


def launch(cfg: Path, ranks: int = 2) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               "-m", "components.train.run", str(cfg)]
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def output_of(proc: subprocess.Popen, timeout: float) -> str:
    """A launch's output once it exits cleanly; killed whole if it outlives `timeout`."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, out[-4000:]
    return out


def finish(proc: subprocess.Popen, timeout: float = 600) -> dict:
    # a 2-rank launch of a few steps takes 30-60 s on a quiet machine, and took 4 minutes under load 16
    out = output_of(proc, timeout)
    return json.loads([line for line in out.splitlines() if line.startswith('{"steps"')][-1])


def losses(ckpt: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}  # a repeated step: the resumed run's line wins


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_all(proc: subprocess.Popen) -> None:
    """kill -9 the launcher and every rank: torchrun puts each rank in a session of its own."""
    ranks = children(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in ranks:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in ranks)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills ranks through /proc")
def test_resume_after_kill_9_gives_the_uninterrupted_losses(tokens, tmp_path):
    whole = tmp_path / "whole"
    result = finish(launch(config(tokens, whole, val_batches=4)))  # validation comes after the last step
    expected = losses(whole)
    assert sorted(expected) == list(range(1, 13)) and result["resumed_from"] == 0
    assert expected[12] < expected[1]  # it learns
    assert json.loads((whole / "ds_config.json").read_text())["zero_optimization"]["stage"] == 2
    # the weights reassembled from the 2 ranks' ZeRO-2 shards are the ones that scored the validation loss
    assert fp32_val_loss(config(tokens, whole, val_batches=4)) == pytest.approx(result["val_loss"], abs=1e-5)

    broken = tmp_path / "broken"
    # The pause keeps the run in steps 9-12 for seconds, so the kill lands before the step-12 checkpoint.
    proc = launch(config(tokens, broken, ckpt_every=4, step_pause_s=0.5))
    deadline = time.monotonic() + 600
    while not ((broken / "latest").exists() and (broken / "latest").read_text() == "step-8"):
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no step-8 checkpoint in time"
        time.sleep(0.02)
    kill_all(proc)
    assert (broken / "latest").read_text() == "step-8"
    assert max(losses(broken)) < 12  # it really was interrupted

    resumed = finish(launch(config(tokens, broken, ckpt_every=4)))
    assert resumed["resumed_from"] == 8
    got = losses(broken)
    assert sorted(got) == list(range(1, 13))
    for step in range(1, 13):
        assert got[step] == pytest.approx(expected[step], abs=5e-7), (step, got[step], expected[step])
    assert (broken / "latest").read_text() == "step-12"
    assert sorted(p.name for p in broken.glob("step-*")) == ["step-12", "step-8"]  # keep_last=2


def fp32_val_loss(config_file: Path) -> float:
    """The validation loss of the exported checkpoint, over the batches the 2 ranks scored."""
    import torch
    import torch.nn.functional as F

    from components.train import TrainConfig
    from components.train.export import load_trained

    cfg = TrainConfig(**json.loads(config_file.read_text()))
    model, val = load_trained(cfg), split_shards(cfg.token_dir, "val")
    with torch.no_grad():
        losses = [F.cross_entropy(model(input_ids=b[:, :-1]).logits.flatten(0, 1), b[:, 1:].flatten()).item()
                  for rank in (0, 1) for b in val_batches(val, SEQ, cfg.micro_batch, cfg.val_batches, rank, 2)]
    return sum(losses) / len(losses)


def test_train_refuses_shards_of_another_tokenizer(tokens, tmp_path):
    from components.tokenize import ContractError
    from components.train import TrainConfig, train
    cfg = TrainConfig(**json.loads(config(tokens, tmp_path / "ck", tokenizer_digest="another").read_text()))
    with pytest.raises(ContractError, match="tokenizer digest"):
        train(cfg)  # refused before DeepSpeed starts a process group
    assert not (tmp_path / "ck").exists()


def test_zero3_bf16_cosine_with_validation(tokens, tmp_path):
    ckpt = tmp_path / "z3"
    result = finish(launch(config(tokens, ckpt, steps=4, grad_accum=1, zero_stage=3, bf16=True,
                                  schedule="cosine", warmup=1, val_batches=4, ckpt_every=2, keep_last=1)))
    rows = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert rows[-1]["lr"] == pytest.approx(0.1 * 3e-3) and rows[-1]["tokens_per_s"] > 0
    assert 0 < result["val_loss"] < 10 and 0 < result["final_loss"] < 10
    cfg = config(tokens, ckpt, steps=4, grad_accum=1, zero_stage=3, bf16=True, val_batches=4)
    assert fp32_val_loss(cfg) == pytest.approx(result["val_loss"], abs=0.05)  # ZeRO-3 shards reassemble; bf16 vs fp32
    assert json.loads((ckpt / "ds_config.json").read_text())["bf16"]["enabled"] is True
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-4"]  # keep_last=1


def test_zero0_plain_data_parallel_exports_the_trained_weights(tokens, tmp_path):
    ckpt = tmp_path / "z0"
    cfg = config(tokens, ckpt, steps=4, grad_accum=1, zero_stage=0, val_batches=4)
    result = finish(launch(cfg))
    assert json.loads((ckpt / "ds_config.json").read_text())["zero_optimization"]["stage"] == 0
    assert fp32_val_loss(cfg) == pytest.approx(result["val_loss"], abs=1e-5)  # read from the module file
