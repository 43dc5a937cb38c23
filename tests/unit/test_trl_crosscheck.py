"""Our post-training losses equal TRL's (trl 1.16, a kept library) on the same model and batch, in fp32: SFT's
mean over the assistant's tokens (SFTTrainer), the Bradley-Terry loss with margin and reward centering
(RewardTrainer), DPO's sigmoid loss and its logged rewards against an explicit reference copy (DPOTrainer) — and
the one place they differ on purpose: TRL's IPO divides each reply's log-ratio by its length, ours does not.

The TRL side is built with the benchmark's settings and data conversion (benchmarks/posttrain_vs_trl.py), so
the trainers the benchmark times are the ones checked here. Each test calls a trainer's compute_loss on one
collated batch; nothing is trained."""
from __future__ import annotations

import copy
import json
import sys
from typing import NamedTuple

import numpy as np
import pytest
import torch

from components.train import TrainConfig
from components.train.objectives import build_model, objective_for
from components.train.objectives.dpo import dpo_loss
from components.train.objectives.pairs import read_pairs, reply_logps
from components.train.objectives.sft import IGNORE, masked_loss_sum, pack
from test_preference_objectives import PAD, SEQ, VOCAB, base, config_file, pairs_dir  # noqa: F401 (fixtures)
from test_sft import conversation
from test_train import ROOT

trl = pytest.importorskip("trl")
sys.path.insert(0, str(ROOT))  # the benchmarks folder is not an installed package
from benchmarks.posttrain_vs_trl import dpo_dataset, id_tokenizer, reward_dataset, sft_dataset, trl_args  # noqa: E402

PAIRS = np.arange(6)  # the pairs of the one batch compared


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for name, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)


def objective_config(base, pairs_dir, tmp_path, objective: str, **options) -> TrainConfig:
    return TrainConfig(**json.loads(config_file(base, pairs_dir, tmp_path / objective, objective,
                                                options=options).read_text()))


def collated(trainer, rows: int) -> dict:
    """One batch of the trainer's own prepared data, through its own collator: what its training step gets."""
    return trainer.data_collator([trainer.train_dataset[i] for i in range(rows)])


def test_sft_loss_equals_sft_trainers_assistant_only_loss(base, pairs_dir, tmp_path):
    rng = np.random.default_rng(11)
    chats = [conversation(rng, turns) for turns in (1, 2, 3, 2, 1)]
    model = build_model(objective_config(base, pairs_dir, tmp_path, "sft")).train()
    rows = pack(chats, SEQ, PAD)  # packed, as the engine trains (test_sft: packed rows give the unpacked loss)
    assert len(rows) < len(chats)
    ours = masked_loss_sum(model, rows.take(np.arange(len(rows)))) / rows.trained.sum()

    trainer = trl.SFTTrainer(model=model, args=trl_args(trl.SFTConfig, tmp_path / "trl", len(chats)),
                             train_dataset=sft_dataset(chats), processing_class=id_tokenizer(VOCAB))
    batch = collated(trainer, len(chats))
    assert int((batch["labels"] != IGNORE).sum()) == rows.trained.sum()  # the same targets
    theirs = trainer.compute_loss(trainer.model, batch)
    assert theirs.item() == pytest.approx(ours.item(), rel=1e-5)


@pytest.mark.parametrize("options", [{}, {"margin": 0.5, "center_coef": 0.01}], ids=["plain", "margin+centering"])
def test_reward_loss_equals_reward_trainers(options, base, pairs_dir, tmp_path):
    cfg = objective_config(base, pairs_dir, tmp_path, "reward", **options)
    model = build_model(cfg).train()
    ours, metrics = objective_for(cfg).loss(model, read_pairs(pairs_dir, "train").take(PAIRS, PAD))

    # TRL reads a margin per pair from the data, ours is one option for all
    data = reward_dataset(read_pairs(pairs_dir, "train"), PAIRS, options.get("margin", 0.0))
    center = {"center_rewards_coefficient": options["center_coef"]} if options else {}
    args = trl_args(trl.RewardConfig, tmp_path / "trl", len(PAIRS), **center)
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=data, processing_class=id_tokenizer(VOCAB))
    theirs = trainer.compute_loss(trainer.model, collated(trainer, len(PAIRS)))
    assert theirs.item() == pytest.approx(ours.item(), rel=1e-5)
    logged = {name: values[-1] for name, values in trainer._metrics["train"].items()}
    assert logged["accuracy"] == pytest.approx(metrics["accuracy"].item())
    assert logged["margin"] == pytest.approx(metrics["reward_margin"].item(), rel=1e-5)


def policy_and_reference(cfg: TrainConfig):
    """The SFT model as the frozen reference and a policy moved away from it: at the reference itself every
    log-ratio is 0 and any implementation's sigmoid loss is log 2, which would check nothing."""
    reference = build_model(cfg).eval()
    policy = copy.deepcopy(reference).train()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in policy.parameters():
            weight.add_(0.2 * torch.randn(weight.shape, generator=generator))
    return policy, reference


class DpoCase(NamedTuple):
    policy: torch.nn.Module
    reference: torch.nn.Module
    batch: dict  # ours
    loss: torch.Tensor  # our objective's
    metrics: dict
    trainer: object  # TRL's DPOTrainer
    collated: dict  # the batch TRL collates from its own tokenization of the same pairs


def dpo_case(base, pairs_dir, tmp_path, loss: str) -> DpoCase:
    """Our DPO objective on the batch, with reference log-probs from the reference model (what the stage
    computes once), and TRL's trainer with a copy of that reference as its explicit ref_model."""
    cfg = objective_config(base, pairs_dir, tmp_path, "dpo", beta=0.1, loss=loss)
    policy, reference = policy_and_reference(cfg)
    batch = read_pairs(pairs_dir, "train").take(PAIRS, PAD)
    with torch.no_grad():
        ref_chosen, ref_rejected = reply_logps(reference, batch).chunk(2)
    ours, metrics = objective_for(cfg).loss(policy, batch | {"ref_chosen": ref_chosen, "ref_rejected": ref_rejected})

    args = trl_args(trl.DPOConfig, tmp_path / "trl", len(PAIRS), beta=0.1, loss_type=[loss])
    trainer = trl.DPOTrainer(model=policy, ref_model=copy.deepcopy(reference), args=args,
                             train_dataset=dpo_dataset(read_pairs(pairs_dir, "train"), PAIRS),
                             processing_class=id_tokenizer(VOCAB))
    theirs = collated(trainer, len(PAIRS))
    assert torch.equal(theirs["input_ids"], batch["input_ids"])  # TRL's tokenizing gave back our ids exactly
    assert torch.equal(theirs["completion_mask"].bool(), batch["labels"] != IGNORE)  # and the same reply tokens
    return DpoCase(policy, reference, batch, ours, metrics, trainer, theirs)


def test_dpo_sigmoid_loss_and_rewards_equal_dpo_trainers(base, pairs_dir, tmp_path):
    case = dpo_case(base, pairs_dir, tmp_path, "sigmoid")
    assert abs(case.loss.item() - np.log(2)) > 0.05, case.loss  # the policy is not the reference
    theirs = case.trainer.compute_loss(case.trainer.model, case.collated)
    assert theirs.item() == pytest.approx(case.loss.item(), rel=1e-5)
    logged = {name: values[-1] for name, values in case.trainer._metrics["train"].items()}
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                 "logps/rejected"):
        assert logged[name] == pytest.approx(case.metrics[name].item(), rel=1e-5, abs=1e-6), name


def test_trl_ipo_is_ours_on_per_token_mean_log_probs(base, pairs_dir, tmp_path):
    """TRL 1.16 divides each reply's summed log-ratio by the reply's token count before IPO's square (its code
    says the IPO authors confirmed this normalisation); ours is eq. 17 of the paper on the sums, as OpenRLHF's
    DPOLoss. Our formula on per-token means gives TRL's loss, on the sums another: the normalisation is the
    whole difference, and no TRL option switches it off, so for IPO this is what is checked.

    (Label smoothing is not compared: TRL 1.16's sigmoid loss has none; its `robust` loss is another formula
    than our conservative-DPO smoothing.)"""
    case = dpo_case(base, pairs_dir, tmp_path, "ipo")
    theirs = case.trainer.compute_loss(case.trainer.model, case.collated)
    lengths = (case.batch["labels"] != IGNORE).sum(-1)
    with torch.no_grad():
        policy, reference = (reply_logps(model, case.batch) / lengths for model in (case.policy, case.reference))
    per_token = dpo_loss(*policy.chunk(2), *reference.chunk(2), beta=0.1, loss="ipo").mean()
    assert theirs.item() == pytest.approx(per_token.item(), rel=1e-5)
    assert theirs.item() != pytest.approx(case.loss.item(), rel=1e-2), (theirs, case.loss)
