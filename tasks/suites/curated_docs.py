"""Suite `curated_docs`: curated text shards, before cleaning (as classifier positives) and mixing read them."""
from __future__ import annotations

NAME = "curated_docs"
ROW_ID = "id"
UNIQUE_ACROSS_SHARDS = ("id",)


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    from components.clean.domain import DOMAINS

    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=["id", "text", "source", "domain"], exact_match=False),
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="domain", value_set=list(DOMAINS)),
    ]
