"""Suite `mix_docs`: the pretraining and anneal shards, before tokenization reads them."""
from __future__ import annotations

NAME = "mix_docs"
ROW_ID = "id"


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    from components.clean.domain import DOMAINS

    max_epoch = (params.max_repeat - 1) if params is not None else None
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=["id", "text", "source", "domain", "epoch"], exact_match=False),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="domain", value_set=list(DOMAINS)),
        # a document repeats at most max_repeat times, and each copy once: (id, epoch) is unique
        gxe.ExpectColumnValuesToBeBetween(column="epoch", min_value=0, max_value=max_epoch),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["id", "epoch"]),
    ]
