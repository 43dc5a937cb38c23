"""Suite `tokenizer_roundtrip`: the trained tokenizer gives back every held-out document and every
adversarial string exactly (no unknown token, no lost byte), before tokenize uses it."""
from __future__ import annotations

NAME = "tokenizer_roundtrip"
ROW_ID = "name"


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=["name", "chars", "tokens", "exact"], exact_match=False),
        gxe.ExpectColumnValuesToBeInSet(column="exact", value_set=[True]),
        gxe.ExpectTableRowCountToBeBetween(min_value=10),  # held-out documents were there to check
    ]
