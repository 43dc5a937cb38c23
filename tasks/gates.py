"""Data gates: validate a stage's staged output (a folder of Parquet shards) against its named GX suite.

A stage writes its shards into a staging folder; the DAG calls `validate(suite_name, staging_dir)` before
publishing them, and a `GateFailed` stops the DAG before the next stage reads the data. The caller logs and
saves the returned (or `GateFailed.result`) JSON-serialisable result.

GX validates one shard at a time (memory: one shard's DataFrame). Uniqueness across shards, which GX cannot
see, is checked here for the columns a suite lists in ``UNIQUE_ACROSS_SHARDS``; it is reported under
``"checks"`` and fails the gate the same way.

great_expectations is imported lazily (≈3 s), and one ephemeral GX context is built per process and reused.
"""
from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # before any great_expectations import

from tasks import suites  # noqa: E402  (does not import great_expectations)

MAX_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 200  # an example html value can be megabytes: keep the message and the result small
_GX_LOCK = threading.Lock()  # the cached context is shared; suites/validation definitions are replaced by name


class GateFailed(Exception):
    """The data failed its suite. str(e) names the suite, each failing expectation (type, column, kwargs) with
    up to 5 example unexpected values and the shard file; `result` is the JSON-serialisable validation result."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def validate(suite_name: str, data_dir: Path, pattern: str = "*.parquet", params=None) -> dict:
    """Validate every shard matching `pattern` in `data_dir` (sorted) against suite `suite_name`, whose
    expectations may depend on the stage's `params` (e.g. the allowed languages).

    Returns ``{"suite", "data_dir", "success", "shards": [{"shard", "rows", "success", "statistics",
    "failures": [...]}], "checks": [{"check", "column", "success", "duplicates", "examples"}]}``.
    Raises GateFailed if any shard or check fails, or if there are no shards;
    tasks.suites.UnknownSuiteError if there is no such suite.
    """
    suite = suites.load(suite_name)
    data_dir = Path(data_dir)
    result: dict[str, Any] = {"suite": suite_name, "data_dir": str(data_dir), "success": False,
                              "shards": [], "checks": []}
    shards = sorted(data_dir.glob(pattern)) if data_dir.is_dir() else []
    if not shards:
        what = "no Parquet shards in" if data_dir.is_dir() else "no output folder (so no Parquet shards) at"
        message = (f"gate {suite_name!r} failed: {what} {data_dir}: the stage kept no records; "
                   f"check its sources and filters")
        result["error"] = message
        raise GateFailed(message, result)

    import pandas as pd

    unique_columns = tuple(getattr(suite, "UNIQUE_ACROSS_SHARDS", ()))
    row_id = getattr(suite, "ROW_ID", None)
    row_context = tuple(getattr(suite, "ROW_CONTEXT", ()))
    # Per shard and column, the distinct 64-bit hashes of its values: 8 bytes x records in all (numpy uint64
    # arrays, not a Python set, which would cost ~70 bytes per record). Values themselves are only re-read
    # (one column, one shard at a time) to name examples when some hash is seen in two shards.
    hashes: dict[str, list] = {c: [] for c in unique_columns}
    with _GX_LOCK:
        definition = _validation_definition(suite_name, suite.expectations(params))
        for path in shards:
            df = pd.read_parquet(path)
            if hasattr(suite, "derive"):  # columns computed in Python that expectations then check
                df = suite.derive(df)
            gx_result = definition.run(batch_parameters={"dataframe": df})
            result["shards"].append(_shard_result(path, df, gx_result, row_id, row_context))
            for column in unique_columns:
                if column in df.columns:
                    hashes[column].append(_distinct_hashes(df[column]))
            del df, gx_result
    for column in unique_columns:
        result["checks"].append(_unique_across_shards(column, shards, hashes.pop(column)))

    result["success"] = all(s["success"] for s in result["shards"]) and all(c["success"] for c in result["checks"])
    json.dumps(result)  # the contract: the caller saves it as JSON; fail here, not there
    if not result["success"]:
        raise GateFailed(_failure_message(result), result)
    return result


# --- Great Expectations ---------------------------------------------------------------------------------------

@functools.cache
def _batch_definition():
    """One ephemeral context per process with a whole-DataFrame pandas batch definition (≈3 s import once)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("gates").add_dataframe_asset("shard")
    return context, asset.add_batch_definition_whole_dataframe("shard")


def _validation_definition(suite_name: str, expectations: list):
    """The suite, rebuilt from its module (so time bounds are current), bound to the shard batch definition."""
    import great_expectations as gx

    context, batch_definition = _batch_definition()
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    return context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite))


def _shard_result(path: Path, df, gx_result, row_id: str | None, row_context: tuple[str, ...] = ()) -> dict:
    failures = []
    for r in gx_result.results:
        if r.success:
            continue
        d = r.to_json_dict()  # timestamps etc. as JSON values
        config, details = d["expectation_config"], d.get("result") or {}
        kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
        if "partial_unexpected_list" in details:
            examples = [_clip(v) for v in details["partial_unexpected_list"][:MAX_EXAMPLES]]
        else:  # table-level expectations (e.g. the column set) report what they saw instead
            examples = [details[k] for k in ("details", "observed_value") if k in details][:1]
        failure = {
            "expectation": config["type"],
            "column": kwargs.pop("column", None),
            "kwargs": kwargs,
            "unexpected_count": details.get("unexpected_count"),
            "element_count": details.get("element_count"),
            "examples": examples,
            "exception": _exception_message(d.get("exception_info")),
        }
        rows = details.get("partial_unexpected_index_list")
        if row_id and row_id in df.columns and rows:
            failure[row_id] = _json_values(df[row_id].loc[rows[:MAX_EXAMPLES]])
            for column in (c for c in row_context if c in df.columns):
                failure[column] = _json_values(df[column].loc[rows[:MAX_EXAMPLES]])
        failures.append(failure)
    return {
        "shard": path.name,
        "rows": len(df),
        "success": bool(gx_result.success),
        "statistics": {k: v for k, v in gx_result.statistics.items()},
        "failures": failures,
    }


def _exception_message(info: dict | None) -> str | None:
    """GX nests metric errors as {metric_id: {"exception_message": ...}}; expectation errors are flat."""
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    messages = [v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return "; ".join(m for m in messages if m) or None


def _json_values(series) -> list:
    return json.loads(series.to_json(orient="values", date_format="iso"))


def _clip(value):
    if isinstance(value, str) and len(value) > MAX_EXAMPLE_CHARS:
        return f"{value[:MAX_EXAMPLE_CHARS]}... ({len(value)} chars)"
    return value


# --- cross-shard uniqueness -----------------------------------------------------------------------------------

def _distinct_hashes(series):
    import numpy as np
    import pandas as pd

    return np.unique(pd.util.hash_pandas_object(series.dropna(), index=False).to_numpy())


def _unique_across_shards(column: str, shards: list[Path], per_shard: list) -> dict:
    """Values of `column` that occur in more than one shard (duplicates within a shard are the suite's job)."""
    import numpy as np
    import pandas as pd

    check = {"check": "unique_across_shards", "column": column, "success": True, "duplicates": 0, "examples": []}
    if len(per_shard) < 2:
        return check
    values, counts = np.unique(np.concatenate(per_shard), return_counts=True)
    del per_shard
    suspects = values[counts > 1]  # each shard's hashes are distinct, so count > 1 means several shards
    if not len(suspects):
        return check
    # Second pass, only on failure: the actual values behind the repeated hashes, and where they are
    # (this also rules out 64-bit hash collisions).
    where: dict[Any, list[str]] = {}
    for path in shards:
        try:
            col = pd.read_parquet(path, columns=[column])[column].dropna()
        except (KeyError, ValueError):  # a shard without the column: the suite already reported it
            continue
        hit = np.isin(pd.util.hash_pandas_object(col, index=False).to_numpy(), suspects)
        for value in set(_json_values(col[hit])):
            where.setdefault(value, []).append(path.name)
    duplicated = {v: s for v, s in where.items() if len(s) > 1}
    check.update(
        success=not duplicated,
        duplicates=len(duplicated),
        examples=[{"value": _clip(v), "shards": s} for v, s in list(duplicated.items())[:MAX_EXAMPLES]],
    )
    return check


# --- message --------------------------------------------------------------------------------------------------

def _failure_message(result: dict) -> str:
    lines = [f"gate {result['suite']!r} failed on {result['data_dir']}:"]
    for shard in result["shards"]:
        for f in shard["failures"]:
            args = ", ".join([f"column={f['column']!r}"] * (f["column"] is not None)
                             + [f"{k}={v!r}" for k, v in f["kwargs"].items()])
            line = f"  {shard['shard']}: {f['expectation']}({args})"
            if f["unexpected_count"] is not None:
                line += f": {f['unexpected_count']} of {f['element_count']} rows unexpected"
            if f["examples"]:
                line += f", e.g. {f['examples']!r}"
            for key in [k for k in f if k not in {"expectation", "column", "kwargs", "unexpected_count",
                                                   "element_count", "examples", "exception"}]:
                line += f" ({key} {f[key]!r})"  # the suite's ROW_ID (and ROW_CONTEXT) values of the example rows
            if f["exception"]:
                line += f": error: {f['exception']}"
            lines.append(line)
    for c in result["checks"]:
        if not c["success"]:
            examples = "; ".join(f"{e['value']!r} in {', '.join(e['shards'])}" for e in c["examples"])
            lines.append(f"  all shards: {c['check']}(column={c['column']!r}): {c['duplicates']} value(s) "
                         f"in more than one shard, e.g. {examples}")
    return "\n".join(lines)
