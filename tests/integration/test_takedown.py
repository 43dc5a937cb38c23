"""A takedown request: `llm-lifecycle lineage --contains URL` lists what descends from a crawled page's records
(the outputs holding them, every output downstream in dvc.yaml, the MLflow runs that recorded those outputs), and
the blocklist entry it advises rebuilds clean and mix without the page. On a real page of the shared crawl."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import make_workspace
from tests.integration.test_pipeline import run

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(2400), pytest.mark.usefixtures("prefect_api")]  # clean runs twice: minutes

THROUGH_MIX = ["ingest", "curate", "clean", "mix"]


def crawl(data_dir: Path) -> dict:
    """20 pages of 2024 wget captures, mostly English and kept by clean: a small workspace."""
    return {"crawl.sources": [{"uri": str(data_dir / "crawl/dolma-sample-0000.warc.gz")}], "crawl.max_records": 20}


@pytest.fixture
def ws(tmp_path, workspace_env, data_dir) -> Path:
    ws = workspace_env(make_workspace(tmp_path / "ws"))
    outcomes, states = run(stages=THROUGH_MIX, push=False, overrides=crawl(data_dir))
    assert set(states.values()) == {"Completed"}, outcomes
    return ws


def contains(url: str) -> dict:
    from infra.cli import app

    result = CliRunner().invoke(app, ["lineage", "--contains", url, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_kept_page_reaches_every_downstream_output_and_the_blocklist_removes_it(ws, data_dir):
    from tasks.dag import Workspace

    crawled = pd.concat(pd.read_parquet(p, columns=["url"]) for p in (ws / "data/ingest").glob("*.parquet"))["url"]
    kept = next(url for url in pd.read_parquet(next((ws / "data/clean").glob("docs-*.parquet")), columns=["url"])["url"]
                if crawled.str.startswith(url).sum() == 1)  # a page whose URL is no other page's prefix
    scheme, rest = kept.split("://", 1)
    report = contains(f"{'http' if scheme == 'https' else 'https'}://{rest}")  # the scheme does not matter

    assert report["found"]["ingest"]["records"] >= 1 and report["found"]["clean"]["records"] == 1
    stages = {o["stage"] for o in report["outputs"]}
    downstream = {s.name for s in Workspace(ws).stages if "mix" in s.upstream}
    assert {"ingest", "clean", "mix"} | downstream <= stages and "curate" not in stages  # curate reads no crawl
    # every output of mix as dvc.lock records it: data/mix and its metrics file (shares counted over the page too)
    assert {o["path"]: o["md5"] for o in report["outputs"] if o["stage"] == "mix"} == {
        out["path"]: out["md5"] for out in Workspace(ws).lock_entry("mix")["outs"]}
    assert "data/mix" in {o["path"] for o in report["outputs"]}
    assert {r["stage"] for r in report["runs"]} == {"ingest", "clean", "mix"}  # not curate's: it read none of them
    assert "clean.url.blocklist" in report["rebuild"]

    outcomes, states = run(stages=THROUGH_MIX, push=False, overrides=crawl(data_dir) | {"clean.url.blocklist": [kept]})
    assert states["clean"] == "Completed" and states["mix"] == "Completed", outcomes

    after = contains(kept)
    assert after["found"]["ingest"]["records"] >= 1  # the raw record stays in the ingest output
    assert after["found"]["clean"] == {"records": 0, "files": [], "removed": {"url/blocked_url": 1}}
    assert "mix" not in after["found"]
