"""Suite `clean_docs`: cleaned web documents, before mixing reads them."""
from __future__ import annotations

NAME = "clean_docs"
ROW_ID = "id"
UNIQUE_ACROSS_SHARDS = ("id",)
COLUMNS = ["id", "text", "url", "source", "language", "language_score", "quality", "domain", "warc_record_id",
           "payload_digest"]


def derive(df):
    """pii_left: what the scrubber's own detector still finds (placeholders are not PII)."""
    from components.clean.pii import find_pii

    return df.assign(pii_left=df["text"].map(lambda text: len(find_pii(text))))


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    from components.clean.domain import DOMAINS

    languages = params.language.languages if params is not None else None
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS, exact_match=False),
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        *([gxe.ExpectColumnValuesToBeInSet(column="language", value_set=languages)] if languages else []),
        gxe.ExpectColumnValuesToBeBetween(column="language_score", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="quality", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="domain", value_set=list(DOMAINS)),
        # no e-mail address, phone number or IP address left after scrubbing
        gxe.ExpectColumnValuesToBeBetween(column="pii_left", min_value=0, max_value=0),
        # lineage reaches the raw WARC record
        gxe.ExpectColumnValuesToNotBeNull(column="warc_record_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="payload_digest"),
    ]
