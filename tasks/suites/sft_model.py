"""Suite `sft_model`: the checks the SFT stage ran on its exported chat model (tasks/sft.py `_checks`): the HF
folder reloads with the trained logits, the losses stayed finite, generation stops at both stop tokens, and the
model ends its turn with <|im_end|> more often than the base model did. The rules are pretrained_model's."""
from __future__ import annotations

from tasks.suites.pretrained_model import ROW_CONTEXT, ROW_ID, expectations

NAME = "sft_model"
__all__ = ["NAME", "ROW_CONTEXT", "ROW_ID", "expectations"]
