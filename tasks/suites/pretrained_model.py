"""Suite `pretrained_model`: the checks the pretraining stage ran on its exported model, one row each
(tasks/pretrain.py `_checks`): the HF folder reloads with the trained logits, the losses stayed finite, and
validation bits per byte beat the unigram baseline."""
from __future__ import annotations

NAME = "pretrained_model"
ROW_ID = "check"
ROW_CONTEXT = ("value", "limit", "detail")  # a failed check says what it measured against what


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=2),
        gxe.ExpectColumnValuesToNotBeNull(column="value"),
        gxe.ExpectColumnValuesToBeInSet(column="passed", value_set=[True]),
    ]
