"""tasks.gates with real Great Expectations (one GX context per process, cached by tasks.gates)."""
from __future__ import annotations

import json
import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from datetime import datetime, timedelta, timezone  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tasks import gates, suites  # noqa: E402
from tasks.gates import GateFailed, validate  # noqa: E402


def records(start: int, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({
        "record_id": [f"<urn:uuid:00000000-0000-0000-0000-{i:012d}>" for i in range(start, start + n)],
        "url": [f"http://example.org/page/{i}" for i in range(start, start + n)],
        "fetch_time": pd.to_datetime([datetime(2012, 2, 10, 21, 0, i, tzinfo=timezone.utc) for i in range(n)]),
        "payload_digest": [f"sha1:DIGEST{i}" for i in range(start, start + n)],
        "html": [f"<html><body>page {i}</body></html>" for i in range(start, start + n)],
        "charset": ["utf-8"] * n,
        "source": ["clueweb12-sample"] * n,
        "content_length": [100 + i for i in range(n)],
    })


def write(tmp_path, *frames: pd.DataFrame):
    for i, df in enumerate(frames):
        df.to_parquet(tmp_path / f"part-{i:05d}.parquet", index=False)
    return tmp_path


def failure(tmp_path, *frames) -> GateFailed:
    with pytest.raises(GateFailed) as info:
        validate("crawl_records", write(tmp_path, *frames))
    json.dumps(info.value.result)
    assert info.value.result["success"] is False
    return info.value


def test_valid_shards_pass(tmp_path):
    result = validate("crawl_records", write(tmp_path, records(0), records(3)))
    assert result["success"] is True
    assert [s["shard"] for s in result["shards"]] == ["part-00000.parquet", "part-00001.parquet"]
    for shard in result["shards"]:
        assert shard["success"] and shard["rows"] == 3 and shard["failures"] == []
        assert shard["statistics"]["evaluated_expectations"] == len(suites.load("crawl_records").expectations())
        assert shard["statistics"]["unsuccessful_expectations"] == 0
    assert result["checks"] == [{"check": "unique_across_shards", "column": "record_id", "success": True,
                                 "duplicates": 0, "examples": []}]
    json.dumps(result)


def test_empty_html(tmp_path):
    df = records(0)
    df.loc[1, "html"] = ""
    e = failure(tmp_path, df)
    assert "part-00000.parquet: expect_column_value_lengths_to_be_between(column='html'" in str(e)
    assert "e.g. ['']" in str(e) and "<urn:uuid:00000000-0000-0000-0000-000000000001>" in str(e)


def test_huge_html_example_is_clipped(tmp_path):
    df = records(0)
    df.loc[0, "html"] = "x" * 10_000_001
    e = failure(tmp_path, df)
    assert "expect_column_value_lengths_to_be_between(column='html'" in str(e)
    assert "... (10000001 chars)" in str(e) and len(str(e)) < 2000


def test_null_url(tmp_path):
    df = records(0)
    df.loc[2, "url"] = None
    e = failure(tmp_path, df)
    assert "expect_column_values_to_not_be_null(column='url')" in str(e)
    assert "1 of 3 rows unexpected, e.g. [None]" in str(e)
    assert "<urn:uuid:00000000-0000-0000-0000-000000000002>" in str(e)


def test_duplicate_record_id_within_shard(tmp_path):
    df = records(0)
    df.loc[2, "record_id"] = df.loc[0, "record_id"]
    e = failure(tmp_path, df)
    assert "expect_column_values_to_be_unique(column='record_id')" in str(e)
    assert "<urn:uuid:00000000-0000-0000-0000-000000000000>" in str(e)
    assert e.result["checks"][0]["success"]  # within one shard: the suite's job, not the cross-shard check


def test_duplicate_record_id_across_shards(tmp_path):
    second = records(3)
    second.loc[1, "record_id"] = "<urn:uuid:00000000-0000-0000-0000-000000000001>"
    e = failure(tmp_path, records(0), second, records(6))
    assert all(s["success"] for s in e.result["shards"])
    assert e.result["checks"][0]["duplicates"] == 1
    assert ("unique_across_shards(column='record_id'): 1 value(s) in more than one shard, e.g. "
            "'<urn:uuid:00000000-0000-0000-0000-000000000001>' in part-00000.parquet, part-00001.parquet") in str(e)


@pytest.mark.parametrize("when", [datetime(1970, 1, 1, tzinfo=timezone.utc),
                                  datetime.now(timezone.utc) + timedelta(days=30)])
def test_fetch_time_out_of_range(tmp_path, when):
    df = records(0)
    df.loc[0, "fetch_time"] = when
    e = failure(tmp_path, df)
    assert "expect_column_values_to_be_between(column='fetch_time', min_value='1990-01-01T00:00:00+00:00'" in str(e)
    assert f"e.g. [{pd.Timestamp(when).isoformat()!r}]" in str(e)


def test_tz_naive_fetch_time_fails(tmp_path):
    df = records(0)
    df["fetch_time"] = df["fetch_time"].dt.tz_localize(None)
    e = failure(tmp_path, df)
    assert "column='fetch_time'" in str(e) and "offset-naive and offset-aware" in str(e)


def test_non_url(tmp_path):
    df = records(0)
    df.loc[1, "url"] = "example.org/no-scheme"
    e = failure(tmp_path, df)
    assert "expect_column_values_to_match_regex(column='url'" in str(e)
    assert "e.g. ['example.org/no-scheme']" in str(e)


def test_missing_column(tmp_path):
    e = failure(tmp_path, records(0).drop(columns=["html"]))
    assert "expect_table_columns_to_match_set" in str(e) and "'missing': ['html']" in str(e)


def test_only_failing_shard_named(tmp_path):
    bad = records(3)
    bad.loc[0, "content_length"] = 0
    e = failure(tmp_path, records(0), bad)
    assert "part-00001.parquet: expect_column_values_to_be_between(column='content_length'" in str(e)
    assert "part-00000.parquet:" not in str(e)
    assert [s["success"] for s in e.result["shards"]] == [True, False]


def test_empty_folder(tmp_path):
    with pytest.raises(GateFailed) as info:
        validate("crawl_records", tmp_path)
    assert str(info.value) == (f"gate 'crawl_records' failed: no Parquet shards in {tmp_path}: "
                               f"the stage kept no records; check its sources and filters")
    assert info.value.result["success"] is False and info.value.result["shards"] == []


def test_unknown_suite(tmp_path):
    with pytest.raises(suites.UnknownSuiteError, match=r"unknown .*suite 'crawl_recs'.*available suites are .*crawl_records"):
        validate("crawl_recs", write(tmp_path, records(0)))
    with pytest.raises(suites.UnknownSuiteError):
        validate("..gates", tmp_path)


def test_suite_registry():
    assert "crawl_records" in suites.available()
    assert suites.load("crawl_records").NAME == "crawl_records"


def test_context_is_cached():
    assert gates._batch_definition() is gates._batch_definition()


def test_a_failed_model_check_says_what_it_measured_against_what(tmp_path):
    pd.DataFrame([("losses_finite", True, 1.0, 1.0, "no NaN"),
                  ("stop_rate_above_base", False, 0.0, 0.0, "share of replies ending their turn, above the base's")],
                 columns=["check", "passed", "value", "limit", "detail"]).to_parquet(tmp_path / "checks.parquet")
    with pytest.raises(GateFailed) as failed:
        validate("sft_model", tmp_path, "checks.parquet")
    assert ("(check ['stop_rate_above_base']) (value [0.0]) (limit [0.0]) "
            "(detail [\"share of replies ending their turn, above the base's\"])") in str(failed.value)
    assert "losses_finite" not in str(failed.value)
