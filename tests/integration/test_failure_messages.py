"""What a user sees when a run fails: `llm-lifecycle run` (in-process) and `llm-lifecycle why` (what
infra/main.sh prints after a deployment run failed on the worker) name the failed stage, its last error lines,
where the full log is, and a hint when the cause is known: offline, a data gate, the workspace lock."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from filelock import FileLock
from typer.testing import CliRunner

from tests.conftest import make_workspace
from tests.integration.test_pipeline import write_warc

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def ws(tmp_path, workspace_env) -> Path:
    return workspace_env(make_workspace(tmp_path / "ws"))


def cli(*args: str):
    from infra.cli import app

    return CliRunner().invoke(app, list(args))


def source(uri: str) -> str:
    return f"crawl.sources=[{{uri: '{uri}'}}]"


@pytest.mark.heavy  # ingest is tried three times (a network error may be transient): ≈ 40 s on a quiet machine
@pytest.mark.timeout(2400)  # 7 min at load 10 on 2 cores; the default 900 s ran out at load 30
def test_offline_run_names_the_stage_its_error_the_log_and_the_variable(ws, monkeypatch):
    monkeypatch.delenv("LLM_LIFECYCLE_DATA_DIR")  # a new user's machine: no local copy of the sources
    # a host that cannot resolve (.invalid is reserved), as on a machine without internet
    result = cli("run", "--stages", "ingest", "--set", source("https://nonexistent.invalid/crawl.warc.gz"))

    assert result.exit_code == 1, result.output
    assert "stage 'ingest' failed" in result.output
    assert "network read failed" in result.output and "Name or service not known" in result.output
    assert "LLM_LIFECYCLE_DATA_DIR" in result.output  # the fix, not only the symptom
    log = Path(re.search(r"full log: (\S+)", result.output).group(1))
    assert log.parent == ws / ".llm-lifecycle" / "logs"
    assert "ingest | error: network read failed" in log.read_text()  # the stage's own output is in the log

    # a deployment's run (infra/main.sh) is read back from the Prefect API: the same stage, error and hint
    why = cli("why")
    assert why.exit_code == 0, why.output
    assert "stage 'ingest' failed" in why.output and "Name or service not known" in why.output
    assert "LLM_LIFECYCLE_DATA_DIR" in why.output and "prefect flow-run logs" in why.output


def test_gate_failure_lists_the_failed_expectations(ws, tmp_path):
    bad = tmp_path / "bad.warc.gz"  # a capture dated 1970: outside the crawl suite's fetch_time range
    write_warc(bad, [("<urn:uuid:1>", "1970-01-01T00:00:00Z", "http://example.com/a"),
                     ("<urn:uuid:2>", "2024-05-01T00:00:00Z", "http://example.com/b")])

    result = cli("run", "--stages", "ingest", "--no-push", "--set", source(str(bad)))

    assert result.exit_code == 1, result.output
    assert "stage 'ingest' failed" in result.output and "failed its data gate" in result.output
    expectations = result.output.split("the expectations that failed:")[1]
    assert "expect_column_values_to_be_between on fetch_time, 1 of 2 rows" in expectations


def test_lock_failure_names_who_holds_it(ws):
    from tasks.orchestrate import acquire_workspace
    from tasks.dag import Workspace

    holder = acquire_workspace(Workspace(ws), 0)  # another run, as it records itself in the holder file
    try:
        result = cli("run", "--stages", "ingest")
    finally:
        holder.release()

    assert result.exit_code == 1, result.output
    assert "the pipeline run failed before or after its stages" in result.output
    hint = result.output.split("hint:")[1]
    assert re.search(r"locked by another pipeline run \(pid \d+, flow run None, since ", hint)
    assert "--wait SECONDS" in hint
    assert not (ws / "data").exists()
