"""The pretraining stage's own logic: bits per byte and its unigram baseline, the DeepSpeed config templates,
launch commands, the run key that decides resuming, the metrics report and the model gate."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from tokenizers import pre_tokenizers, trainers

from components.tokenizer import SPECIAL_TOKENS, TokenizerParams
from components.tokenizer.train import load, new_tokenizer, save
from components.train import TrainConfig, split_shards, val_batches
from components.train.evaluate import token_bytes, unigram_bits_per_byte
from components.train.launch import LaunchParams, command, hosts, world_size
from components.train.report import read_rows, summary
from tests.unit.test_train import DIGEST, EOT, VOCAB, write_shards

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("tokens"))


def test_token_bytes_add_up_to_the_utf8_length(tmp_path):
    text = "A naïve café in 東京 — prices rose 12.5% 😀\n\tand then   some.  " * 3
    tokenizer = new_tokenizer()
    tokenizer.train_from_iterator([text], trainer=trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    save(tokenizer, tmp_path, TokenizerParams(vocab_size=512, model_max_length=64), {})
    lengths = token_bytes(tmp_path, 320)
    used = tokenizer.get_vocab_size()  # ids past it are unused: 0 bytes, like the special tokens
    assert (lengths[:len(SPECIAL_TOKENS)] == 0).all() and lengths[len(SPECIAL_TOKENS):used].min() >= 1
    assert (lengths[used:] == 0).all()
    for sample in (text, "東京😀", "plain ascii words"):
        ids = load(tmp_path).encode(sample).ids
        assert lengths[ids].sum() == len(sample.encode("utf-8"))  # multi-byte characters split across tokens too


def test_unigram_baseline_is_the_train_frequencies_scored_on_the_val_windows(tokens):
    lengths = np.ones(VOCAB, dtype=np.int64)
    lengths[EOT] = 0  # a special token: no bytes, left out of bits per byte
    got = unigram_bits_per_byte(tokens, lengths, seq_len=16, micro_batch=2, max_batches=3, world=1)

    train = np.concatenate([np.fromfile(p, dtype=np.uint16) for p in split_shards(tokens, "train")])
    log_p = np.log((np.bincount(train, minlength=VOCAB) + 1) / (len(train) + VOCAB))
    targets = np.concatenate([b[:, 1:].numpy().ravel() for b in val_batches(split_shards(tokens, "val"), 16, 2, 3)])
    assert got["unigram_loss"] == pytest.approx(-log_p[targets].mean())
    text = targets != EOT
    assert got["unigram_bpb"] == pytest.approx(-log_p[targets[text]].sum() / math.log(2) / text.sum())
    two_ranks = unigram_bits_per_byte(tokens, lengths, 16, 2, 3, world=2)  # ranks score 2 of the 3 batches
    assert two_ranks["unigram_loss"] != pytest.approx(got["unigram_loss"])


def train_config(tokens: Path, **overrides) -> TrainConfig:
    return TrainConfig(vocab_size=VOCAB, tokenizer_digest=DIGEST, token_dir=tokens, ckpt_dir=tokens / "ck",
                       **overrides)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_templates_are_filled_from_the_params(tokens, stage):
    from components.train import deepspeed_config

    template = json.loads((ROOT / f"infra/deepspeed/zero{stage}.json").read_text())
    cfg = train_config(tokens, micro_batch=3, grad_accum=5, zero_stage=stage, bf16=True, grad_clip=0.5,
                       deepspeed=template)
    filled = deepspeed_config(cfg, world=4)
    assert filled["train_batch_size"] == 60 and filled["train_micro_batch_size_per_gpu"] == 3
    assert filled["zero_optimization"]["stage"] == stage and filled["bf16"]["enabled"] is True
    assert filled["gradient_clipping"] == 0.5 and "auto" not in json.dumps(filled)
    assert {k: v for k, v in filled["zero_optimization"].items() if k != "stage"} == {
        k: v for k, v in template["zero_optimization"].items() if k != "stage"}  # the tuning is the template's

    template["zero_optimization"]["reduce_bucket_size"] = "auto"  # nothing in params fills this one
    with pytest.raises(ValueError, match="zero_optimization.reduce_bucket_size"):
        deepspeed_config(train_config(tokens, deepspeed=template), world=1)


def test_launch_commands(tmp_path, monkeypatch):
    one_node = command(LaunchParams(nproc_per_node=2), "components.train.run", "cfg.json")
    assert one_node[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
                            "components.train.run", "cfg.json"]

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nnode-a slots=8\n\nnode-b slots=8  # second\n")
    assert hosts(hostfile) == [("node-a", 8), ("node-b", 8)]
    many = LaunchParams(launcher="deepspeed", hostfile=hostfile, nproc_per_node=8)
    cmd = command(many, "components.train.run", "cfg.json")
    assert cmd[0].endswith("deepspeed") and cmd[cmd.index("--master_addr") + 1] == "node-a"
    assert cmd[-3:] == ["--module", "components.train.run", "cfg.json"] and world_size(many) == 16

    hostfile.write_text("node-a 8\n")
    with pytest.raises(ValueError, match="hostfile:1: expected 'HOST slots=N'"):
        hosts(hostfile)
    with pytest.raises(ValidationError, match="set launch.hostfile"):
        LaunchParams(launcher="deepspeed")

    slurm = LaunchParams(launcher="slurm", nproc_per_node=4)
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    with pytest.raises(ValueError, match="inside an allocation"):
        command(slurm, "components.train.run", "cfg.json")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    cmd = command(slurm.model_copy(update={"master_addr": "gpu-001"}), "components.train.run", "cfg.json")
    assert cmd[:2] == ["srun", "--ntasks-per-node=1"] and "gpu-001:29500" in cmd and world_size(slurm) == 12


def test_run_key_changes_with_what_decides_the_weights_only(tokens):
    from tasks.pretrain import run_key

    base = run_key(train_config(tokens), tokens, world=2)
    same = train_config(tokens, log_every=7, val_batches=3, keep_last=9, step_pause_s=1, peak_flops=1e12)
    assert base == run_key(same, tokens, world=2)
    assert base != run_key(train_config(tokens, lr=1e-4), tokens, world=2)
    assert base != run_key(train_config(tokens, steps=301), tokens, world=2)  # the schedule's shape: its length
    assert base != run_key(train_config(tokens), tokens, world=4)  # another global batch
    halved = train_config(tokens).model_copy(update={"grad_accum": 2 * train_config(tokens).grad_accum})
    assert base == run_key(halved, tokens, world=1)  # a node lost: the same global batch on fewer ranks resumes
    other = write_shards(tokens.parent / "other", seed=1)
    assert base != run_key(train_config(tokens), other, world=2)  # other data


def test_rows_of_a_resumed_run_replace_the_interrupted_ones(tmp_path):
    rows = [{"step": 1, "loss": 5.0, "lr": 1.0, "tokens_per_s": 10.0, "mfu": 0.1},
            {"step": 2, "loss": 4.0, "lr": 1.0, "tokens_per_s": 30.0, "mfu": 0.3},
            {"step": 2, "loss": 3.5, "lr": 1.0, "tokens_per_s": 20.0, "mfu": 0.2},  # resumed: this one counts
            {"step": 3, "loss": 3.0, "lr": 0.5, "tokens_per_s": 40.0, "mfu": 0.4, "val_loss": 3.2, "val_bpb": 1.1}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = read_rows(path)
    assert [r["step"] for r in read] == [1, 2, 3] and read[1]["loss"] == 3.5
    stats = summary(read)
    assert stats["final_train_loss"] == 3.0 and stats["val_bpb"] == 1.1 and stats["all_losses_finite"] == 1.0
    assert stats["median_tokens_per_s"] == 40.0  # the median of steps 2-3: the first step warms up


def test_the_model_gate_fails_on_any_failed_check(tmp_path):
    from tasks import gates

    checks = pd.DataFrame([("hf_reload_same_logits", True, 1e-6, 1e-4, ""),
                           ("val_bpb_below_unigram", False, 3.4, 3.2, "")],
                          columns=["check", "passed", "value", "limit", "detail"])
    checks.to_parquet(tmp_path / "checks.parquet")
    with pytest.raises(gates.GateFailed, match="val_bpb_below_unigram"):
        gates.validate("pretrained_model", tmp_path, pattern="checks.parquet")
    checks.assign(passed=True).to_parquet(tmp_path / "checks.parquet")
    assert gates.validate("pretrained_model", tmp_path, pattern="checks.parquet")["success"]


def test_the_stage_refuses_to_run_without_validation_batches():
    from tasks.pretrain import Params

    assert Params(val_batches=4).launch.launcher == "torchrun"
    with pytest.raises(ValidationError, match="set pretrain.val_batches"):
        Params(val_batches=0)
