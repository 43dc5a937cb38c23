"""Suite `ppo_model`: the checks the PPO stage ran on its exported policy (tasks/ppo.py, the chat-model checks
of tasks/training.py): the HF folder reloads with the trained logits, the losses stayed finite, generation stops
at both stop tokens. The rules are pretrained_model's."""
from __future__ import annotations

from tasks.suites.pretrained_model import ROW_CONTEXT, ROW_ID, expectations

NAME = "ppo_model"
__all__ = ["NAME", "ROW_CONTEXT", "ROW_ID", "expectations"]
