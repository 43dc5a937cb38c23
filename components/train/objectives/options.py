"""The settings of the post-training objectives, as plain pydantic: every flow run reads every stage's params, and
the objectives' modules import torch. Each objective module uses its own class under the name `Options`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from components.params import StrictModel


class DpoOptions(StrictModel):
    beta: float = Field(0.1, gt=0, description="strength of the KL leash to the reference model")
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="sigmoid only: the share of labels assumed "
                                   "flipped (conservative DPO)")
    reference_dir: Path | None = Field(None, description="where reference_logps-<split>.npy are (the stage "
                                       "writes them); default the data folder")


class PpoOptions(StrictModel):
    reward_model: Path | None = Field(None, description="the reward model folder (AutoModelForSequenceClassification)")
    rule_reward: str | None = Field(None, pattern=r"^token_share:\d+-\d+$", description="instead of a reward model: "
                                    "`token_share:LO-HI`, the share of reply tokens whose id is in [LO, HI) (a reward "
                                    "learnable by construction, for tests and demonstrations)")
    value_from: Path | None = Field(None, description="the value model's starting folder; default the reward model "
                                    "(its head included), else the policy")
    minibatches: int = Field(2, gt=0, description="optimizer steps per pass over a rollout")
    ppo_epochs: int = Field(2, gt=0, description="passes over each rollout")
    max_new_tokens: int = Field(32, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    kl_coef: float = Field(0.05, ge=0, description="β, the start value when adaptive")
    adaptive_kl: bool = True
    target_kl: float = Field(6.0, gt=0, description="adaptive controller: the KL (nats per reply) it steers to")
    kl_horizon: int = Field(10000, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    clip_range_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    missing_stop_reward: float | None = Field(-1.0, description="the score of a reply without the stop token "
                                              "(None: score it as it is)")
    stop_token_ids: list[int] = Field(default_factory=list, description="generation ends at these (the stage "
                                      "fills <|im_end|> and end-of-text)")

    @property
    def steps_per_rollout(self) -> int:
        return self.minibatches * self.ppo_epochs


class RewardOptions(StrictModel):
    margin: float = Field(0.0, ge=0, description="required reward gap: −log σ(r_c − r_r − margin)")
    center_coef: float = Field(0.0, ge=0, description="weight of (r_c + r_r)²: keeps rewards centred on 0")
