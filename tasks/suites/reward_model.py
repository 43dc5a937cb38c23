"""Suite `reward_model`: the checks the reward stage ran on its exported model (tasks/reward.py `_checks`): the
folder reloads as AutoModelForSequenceClassification with the trained rewards, the losses stayed finite, and
the held-out accuracy reaches `min_accuracy` when one is set. The rules are pretrained_model's."""
from __future__ import annotations

from tasks.suites.pretrained_model import ROW_CONTEXT, ROW_ID, expectations

NAME = "reward_model"
__all__ = ["NAME", "ROW_CONTEXT", "ROW_ID", "expectations"]
