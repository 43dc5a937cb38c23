"""Suite `dpo_model`: the checks the DPO stage ran on its exported chat model (tasks/dpo.py `_checks`): the HF
folder reloads with the trained logits, the losses stayed finite, generation stops at both stop tokens. The
rules are pretrained_model's."""
from __future__ import annotations

from tasks.suites.pretrained_model import ROW_CONTEXT, ROW_ID, expectations

NAME = "dpo_model"
__all__ = ["NAME", "ROW_CONTEXT", "ROW_ID", "expectations"]
