"""PPO for RLHF: the policy maximises the reward model's score minus β·KL to the frozen reference (Ziegler et
al. 2019, Ouyang et al. 2022), on the same engine as every other objective.

Every `steps_per_rollout` optimizer steps, a rollout: each rank takes its prompts (seeded by the rollout index),
the current policy samples replies with a KV cache (`generate`: temperature, top-p, `max_new_tokens`), and the
frozen models score them: the reward model once per reply (a reply that never emits the stop token gets
`missing_stop_reward` instead), the reference per token. Per-token rewards are −β·(log π − log π_ref), plus the
score on the reply's last token; GAE(γ, λ) gives advantages (whitened over the rank's rollout) and returns.
Then `ppo_epochs` passes over the rollout in `minibatches` shuffled minibatches, one optimizer step each: the
clipped policy loss plus `vf_coef` times the clipped value loss. β follows the adaptive controller of Ziegler
et al. (target KL, horizon) or stays fixed.

Implementation details adopted from "The N Implementation Details of RLHF with PPO" (Huang et al. 2023): the
value model initialised from the reward model; KL as a per-token reward (k1 estimator), not a loss term;
advantage whitening; clipped value loss; a fixed penalty for replies without the stop token; sampling at
temperature > 0 with the same temperature in the log-probabilities; the reward model and the reference in
inference mode. Not adopted: reward whitening and per-token entropy bonus.

The trained module holds the policy and the value model (one DeepSpeed engine, so ZeRO shards both); the
output is the policy. Exact resume: a rollout depends on the weights at its first step and its seed, so
checkpoints fall on rollout boundaries (`ckpt_every` a multiple of `steps_per_rollout`), and β is saved
with them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from components.model.load import load_pretrained
from components.train.objectives.options import PpoOptions as Options  # params read it without torch
from components.train.objectives.sampling import EpochSampler, dealt
from components.train.objectives.sft import check_data
from components.train.params import TrainConfig


# --- the maths, as plain functions (tested against hand-computed values) ---

def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + 1e-8) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over each row's masked (reply) positions, last to first; the value after
    the last reply token is 0. Returns (advantages, returns = advantages + values)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    for t in reversed(range(rewards.shape[1])):
        live = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(live > 0, delta + gamma * lam * running, running)
        next_value = torch.where(live > 0, values[:, t], next_value)
        advantages[:, t] = running * live
    return advantages, (advantages + values) * mask


def ppo_losses(logps, old_logps, advantages, values, old_values, returns, mask, clip: float, clip_value: float):
    """{policy, value, clipfrac, approx_kl}: the clipped surrogate (to minimise) and the clipped value loss."""
    ratio = torch.exp(logps - old_logps)
    policy = masked_mean(torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)), mask)
    clipped = old_values + (values - old_values).clamp(-clip_value, clip_value)
    value = 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)
    return {"policy": policy, "value": value,
            "clipfrac": masked_mean(((ratio - 1).abs() > clip).float(), mask),
            "approx_kl": 0.5 * masked_mean((logps - old_logps) ** 2, mask)}


def adapt_kl(beta: float, kl: float, target: float, horizon: int, samples: int) -> float:
    """Ziegler et al.'s proportional controller: β grows when the KL is above target, shrinks below."""
    error = float(np.clip(kl / target - 1, -0.2, 0.2))
    return beta * (1 + error * samples / horizon)


# --- models ---

class PolicyAndValue(nn.Module):
    """The two trained models in one module, so one engine (and one ZeRO partitioning) holds both."""

    def __init__(self, policy, value):
        super().__init__()
        self.policy, self.value = policy, value

    @property
    def config(self):  # the engine's FLOP count and the export read the policy's
        return self.policy.config

    def tie_weights(self) -> None:
        self.policy.tie_weights()
        self.value.tie_weights()

    def values(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        hidden = self.value.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).last_hidden_state
        return self.value.score(hidden).squeeze(-1).float()


def build_model(cfg: TrainConfig) -> PolicyAndValue:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    options = Options(**cfg.options)
    value_from = options.value_from or options.reward_model or cfg.init_from
    with torch.random.fork_rng(devices=[]):  # a new value head starts the same on every rank and run
        torch.manual_seed(cfg.seed)
        value = load_pretrained(AutoModelForSequenceClassification, value_from, num_labels=1)
    return PolicyAndValue(load_pretrained(AutoModelForCausalLM, cfg.init_from), value)


def exported(model: PolicyAndValue):
    return model.policy


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows, as `generate` numbers them: 0 at each row's first real token."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def token_logps(model, input_ids, attention_mask, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of each token given those before it, entropy of that distribution): (rows, length - 1),
    at the sampling temperature."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
                   use_cache=False).logits[:, :-1].float() / temperature
    logp = F.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1), entropy


def read_prompts(data_dir: Path, split: str) -> list[list[dict]]:
    path = Path(data_dir) / f"pairs-{split}.parquet"
    if not path.exists():
        return []
    return list(dict.fromkeys(pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist()))


class Objective:
    def __init__(self, cfg: TrainConfig):
        check_data(cfg)
        self.cfg, self.options = cfg, Options(**cfg.options)
        if (self.options.reward_model is None) == (self.options.rule_reward is None):
            raise ValueError("PPO needs exactly one of reward_model (a folder) and rule_reward")
        if cfg.ckpt_every % self.options.steps_per_rollout or cfg.steps % self.options.steps_per_rollout:
            raise ValueError(f"steps ({cfg.steps}) and ckpt_every ({cfg.ckpt_every}) must be multiples of the "
                             f"{self.options.steps_per_rollout} steps a rollout takes (minibatches × ppo_epochs): a "
                             "checkpoint inside a rollout could not be resumed exactly")
        self.beta, self.model, self.rollout = self.options.kl_coef, None, None

    def build_model(self):
        return build_model(self.cfg)

    def train_size(self) -> int:  # a pass over the prompts takes ppo_epochs optimizer passes per rollout
        return len(read_prompts(self.cfg.token_dir, "train")) * self.options.ppo_epochs

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = state["beta"]

    def attach(self, engine, mean_over_ranks) -> None:
        """The engine being trained, and the frozen models, on its device."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model, self.mean_over_ranks, device = engine, mean_over_ranks, engine.device
        self.tokenizer = AutoTokenizer.from_pretrained(self.cfg.init_from, padding_side="left")
        self.reference = load_pretrained(AutoModelForCausalLM, self.cfg.init_from).to(device).eval()
        if self.options.reward_model is not None:
            from transformers import AutoModelForSequenceClassification

            scorer = load_pretrained(AutoModelForSequenceClassification, self.options.reward_model)
            self.scorer = scorer.to(device).eval()

    # --- rollouts ---

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        texts = [self.tokenizer.apply_chat_template(json.loads(p), tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        room = self.cfg.model.seq_len - self.options.max_new_tokens
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False, truncation=True,
                              max_length=room)

    @torch.no_grad()
    def sample(self, prompts: list[str], seed: list[int], greedy: bool = False) -> dict[str, torch.Tensor]:
        """Replies of the current policy: ids (prompt + reply), attention mask, reply mask, whether it stopped."""
        policy, opts = self.model.module.policy, self.options
        encoded = {k: v.to(self.model.device) for k, v in self._encode(prompts).items()}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.default_rng(seed).integers(2**31)))
            ids = policy.generate(**encoded, max_new_tokens=opts.max_new_tokens, do_sample=not greedy,
                                  temperature=opts.temperature, top_p=opts.top_p, eos_token_id=opts.stop_token_ids,
                                  pad_token_id=self.cfg.pad_id)
        prompt_len = encoded["input_ids"].shape[1]
        reply = ids[:, prompt_len:]
        is_stop = torch.isin(reply, torch.tensor(opts.stop_token_ids, device=reply.device))
        stopped = is_stop.any(-1)
        first_stop = torch.where(stopped, is_stop.float().argmax(-1), torch.full_like(stopped, reply.shape[1], dtype=torch.long))
        live = torch.arange(reply.shape[1], device=reply.device)[None] <= first_stop[:, None]  # the stop token counts
        reply_mask = torch.cat([torch.zeros_like(encoded["input_ids"]), live.long()], dim=1)
        attention = torch.cat([encoded["attention_mask"], live.long()], dim=1)
        ids = torch.where(attention.bool(), ids, torch.full_like(ids, self.cfg.pad_id))
        return {"input_ids": ids, "attention_mask": attention, "reply_mask": reply_mask, "stopped": stopped}

    @torch.no_grad()
    def score(self, sample: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reward of each whole reply (before the KL term)."""
        opts, ids, reply = self.options, sample["input_ids"], sample["reply_mask"].bool()
        if opts.rule_reward:
            low, high = map(int, opts.rule_reward.removeprefix("token_share:").split("-"))
            scores = (((ids >= low) & (ids < high) & reply).sum(-1) / reply.sum(-1).clamp(min=1)).float()
        else:
            ids, attention = self._closed(ids, sample["attention_mask"])
            scores = self.scorer(input_ids=ids, attention_mask=attention,
                                 position_ids=positions(attention)).logits.squeeze(-1).float()
        if opts.missing_stop_reward is not None:
            scores = torch.where(sample["stopped"], scores, torch.full_like(scores, opts.missing_stop_reward))
        return scores

    def _closed(self, ids: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows as the reward model was trained to read them: a reply that ended its turn with <|im_end|> is
        followed by end-of-text, where the model reads its score."""
        ids, attention = F.pad(ids, (0, 1), value=self.cfg.pad_id), F.pad(attention, (0, 1), value=0)
        last = (attention * torch.arange(attention.shape[1], device=ids.device)).argmax(-1)
        rows = torch.arange(len(ids), device=ids.device)
        turn_ended = ids[rows, last] == self.options.stop_token_ids[0]
        ids[rows[turn_ended], last[turn_ended] + 1] = self.cfg.eos_id
        attention[rows[turn_ended], last[turn_ended] + 1] = 1
        return ids, attention

    @torch.no_grad()
    def make_rollout(self, index: int, prompts: list[str], rank: int) -> dict[str, torch.Tensor]:
        opts, began = self.options, time.perf_counter()
        sample = self.sample(prompts, [self.cfg.seed, index, rank])
        generated = time.perf_counter() - began
        ids, attention = sample["input_ids"], sample["attention_mask"]
        mask = sample["reply_mask"][:, 1:].float()  # per predicted token, aligned with ids[:, 1:]
        old_logps, _ = token_logps(self.model.module.policy, ids, attention, opts.temperature)
        ref_logps, _ = token_logps(self.reference, ids, attention, opts.temperature)
        values = self.model.module.values(ids, attention, positions(attention))[:, :-1]
        scores = self.score(sample)
        kl = (old_logps - ref_logps) * mask
        rewards = -self.beta * kl
        last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)  # each reply's last token
        rewards = rewards + last.float() * scores[:, None]
        advantages, returns = gae(rewards * mask, values * mask, mask, opts.gamma, opts.lam)
        stats = {"reward": scores.mean(), "reward_with_kl": (rewards * mask).sum(-1).mean(),
                 "kl": kl.sum(-1).mean(), "beta": torch.tensor(self.beta),
                 "response_length": mask.sum(-1).mean(), "stop_rate": sample["stopped"].float().mean(),
                 "rollout_tokens_per_s": torch.tensor(float(mask.sum()) / generated),
                 "rollout_generate_s": torch.tensor(generated), "rollout_score_s":
                 torch.tensor(time.perf_counter() - began - generated)}
        if opts.adaptive_kl:  # the next rollout's β, from this one's KL averaged over every rank
            self.beta = adapt_kl(self.beta, self.mean_over_ranks(stats["kl"].item()), opts.target_kl,
                                 opts.kl_horizon, len(prompts))
        return {"input_ids": ids, "attention_mask": attention, "mask": mask, "old_logps": old_logps,
                "old_values": values, "advantages": whiten(advantages, mask), "returns": returns,
                "stats": {k: v.float().cpu() for k, v in stats.items()}}

    def train_batches(self, rank: int, world: int):
        cfg, opts = self.cfg, self.options
        prompts = read_prompts(cfg.token_dir, "train")
        per_rollout = cfg.micro_batch * cfg.grad_accum * opts.minibatches  # prompts per rank per rollout
        sampler = EpochSampler(len(prompts), cfg.seed, per_rollout, 1, world)

        def batch(step: int, micro: int) -> dict[str, torch.Tensor]:
            index, within = divmod(step, opts.steps_per_rollout)
            if self.rollout is None or self.rollout[0] != index:
                chosen = [prompts[i] for i in sampler.batch(index, 0, rank)]
                self.rollout = (index, {k: v.cpu() if torch.is_tensor(v) else v for k, v in
                                        self.make_rollout(index, chosen, rank).items()})
            rollout = self.rollout[1]
            order = np.random.default_rng([cfg.seed, index, within // opts.minibatches, rank]).permutation(per_rollout)
            first = (within % opts.minibatches) * cfg.micro_batch * cfg.grad_accum + micro * cfg.micro_batch
            rows = torch.from_numpy(order[first:first + cfg.micro_batch])
            taken = {k: v[rows] for k, v in rollout.items() if k != "stats"}
            return taken | {f"stat_{k}": v for k, v in rollout["stats"].items()}

        return batch

    def loss(self, model, batch: dict):
        module, opts = model.module, self.options
        ids, attention, mask = batch["input_ids"], batch["attention_mask"], batch["mask"]
        logps, entropy = token_logps(module.policy, ids, attention, opts.temperature)
        values = module.values(ids, attention, positions(attention))[:, :-1]
        losses = ppo_losses(logps, batch["old_logps"], batch["advantages"], values, batch["old_values"],
                            batch["returns"], mask, opts.clip_range, opts.clip_range_value)
        returns, residual = batch["returns"], (batch["returns"] - values).detach()
        explained = 1 - masked_mean((residual - masked_mean(residual, mask)) ** 2, mask) / masked_mean(
            (returns - masked_mean(returns, mask)) ** 2, mask).clamp(min=1e-8)
        metrics = {"policy_loss": losses["policy"].detach(), "value_loss": losses["value"].detach(),
                   "clipfrac": losses["clipfrac"], "approx_kl": losses["approx_kl"].detach(),
                   "entropy": masked_mean(entropy, mask).detach(), "explained_variance": explained}
        metrics |= {k.removeprefix("stat_"): v for k, v in batch.items() if k.startswith("stat_")}
        return losses["policy"] + opts.vf_coef * losses["value"], metrics

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    # --- validation: the reward of greedy replies to held-out prompts ---

    def val_batches(self, rank: int, world: int):
        prompts, size = read_prompts(self.cfg.token_dir, "val"), self.cfg.micro_batch
        for index in dealt(min(self.cfg.val_batches, len(prompts) // size), rank, world):
            yield {"index": torch.arange(index * size, (index + 1) * size)}

    def val_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        prompts = read_prompts(self.cfg.token_dir, "val")
        sample = self.sample([prompts[i] for i in batch["index"].tolist()], [self.cfg.seed], greedy=True)
        scores = self.score(sample).double()
        return {"score": scores.sum(), "n": torch.tensor(float(len(scores)), dtype=torch.float64),
                "stopped": sample["stopped"].double().sum()}

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        if not sums.get("n"):
            return {}
        return {"val_reward": sums["score"] / sums["n"], "val_stop_rate": sums["stopped"] / sums["n"]}
