"""Suite `crawl_records`: the Parquet shards written by the crawl-ingest stage, before cleaning reads them.

One row per kept HTML response record of a WARC file. Columns:
record_id (str, WARC-Record-ID like ``<urn:uuid:...>``), url (str), fetch_time (timezone-aware UTC timestamp),
payload_digest (str), html (str), charset (str), source (str), content_length (int).

No derived columns: GX 1.24's ExpectColumnValuesToBeBetween compares a tz-aware ``datetime64[..., UTC]`` column
with tz-aware ``datetime`` bounds directly (checked). A tz-naive fetch_time column cannot be compared with
them and fails that expectation with "can't compare offset-naive and offset-aware datetimes", which is
intended: the ingest stage must write UTC-aware times.

record_id uniqueness: ExpectColumnValuesToBeUnique covers one shard; ``UNIQUE_ACROSS_SHARDS`` makes
`tasks.gates` check it across all shards of the dataset.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

NAME = "crawl_records"
COLUMNS = ("record_id", "url", "fetch_time", "payload_digest", "html", "charset", "source", "content_length")
ROW_ID = "record_id"
UNIQUE_ACROSS_SHARDS = ("record_id",)

MAX_CHARS = 10_000_000  # sane sizes: the ingest stage's max_html_bytes is far below this
EARLIEST_FETCH = datetime(1990, 1, 1, tzinfo=timezone.utc)  # before the web existed: a broken timestamp


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    latest_fetch = datetime.now(timezone.utc) + timedelta(days=1)  # a day of slack for clock skew
    return [
        # every column the cleaning stage reads is there (extra columns are allowed)
        gxe.ExpectTableColumnsToMatchSet(column_set=list(COLUMNS), exact_match=False),
        gxe.ExpectColumnValuesToNotBeNull(column="record_id"),
        # within this shard; across shards see UNIQUE_ACROSS_SHARDS
        gxe.ExpectColumnValuesToBeUnique(column="record_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="url"),
        # an absolute http(s)/ftp URL (ClueWeb and Common Crawl target URIs are http/https), or the file:// URL of a
        # saved HTML page that names no URL of its own
        gxe.ExpectColumnValuesToMatchRegex(column="url", regex=r"^(?:(?:https?|ftp)://[^\s/]+|file:///\S)"),
        gxe.ExpectColumnValuesToNotBeNull(column="html"),
        # empty pages are useless and giant ones are broken records
        gxe.ExpectColumnValueLengthsToBeBetween(column="html", min_value=1, max_value=MAX_CHARS),
        gxe.ExpectColumnValuesToBeBetween(column="content_length", min_value=1, max_value=MAX_CHARS),
        gxe.ExpectColumnValuesToNotBeNull(column="fetch_time"),
        # a valid crawl time: not the 1970 epoch of a zeroed field, not in the future
        gxe.ExpectColumnValuesToBeBetween(column="fetch_time", min_value=EARLIEST_FETCH, max_value=latest_fetch),
    ]
