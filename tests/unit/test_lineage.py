"""Lineage must not cry wolf: a run's own rewrite of dvc.lock leaves the commit clean; changed code or
parameters mark it `-dirty` and are named."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tasks.tracking import dirty_files, git_commit

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


@pytest.fixture
def repo(tmp_path) -> Path:
    for name, text in {"dvc.lock": "schema: '2.0'\n", "params.yaml": "crawl: {max_records: 5}\n",
                       "tasks/ingest.py": "SECTION = 'crawl'\n", "reports/evaluate/base/metrics.json": "{}\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "init"], cwd=tmp_path, check=True)
    return tmp_path


def head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def test_the_runs_own_dvc_lock_and_untracked_outputs_leave_the_commit_clean(repo):
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {ingest: {}}\n")  # what every run rewrites
    (repo / "reports/evaluate/base/metrics.json").write_text('{"score": 0.5}\n')  # committed, as DVC intends
    (repo / "data").mkdir()
    (repo / "data" / "records.parquet").write_bytes(b"not tracked by git")

    assert dirty_files(repo) == []
    assert git_commit(repo) == head(repo)


def test_changed_code_or_parameters_are_dirty_and_named(repo):
    (repo / "params.yaml").write_text("crawl: {max_records: 50}\n")
    (repo / "tasks" / "ingest.py").write_text("SECTION = 'crawl'  # edited\n")
    (repo / "dvc.lock").write_text("rewritten by the run\n")

    assert dirty_files(repo) == ["params.yaml", "tasks/ingest.py"]
    assert git_commit(repo) == head(repo) + "-dirty"


def test_a_renamed_file_names_both_paths(repo):
    subprocess.run(["git", "mv", "tasks/ingest.py", "tasks/crawl.py"], cwd=repo, check=True)

    assert dirty_files(repo) == ["tasks/crawl.py", "tasks/ingest.py"]


@pytest.fixture
def tracking_in(repo):
    """MLflow's embedded store in the repo, for this test only (the URI is process-wide)."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    yield repo
    mlflow.set_tracking_uri(before)


def test_a_run_records_the_files_that_differ_and_lineage_shows_them(tracking_in):
    from tasks import lineage, tracking

    repo = tracking_in
    (repo / "params.yaml").write_text("crawl: {max_records: 50}\n")
    (repo / "dvc.lock").write_text("rewritten by the run\n")

    run_id = tracking.start_run(repo, "ingest", {"kind": "stage", "stage": "ingest"})

    tags = tracking.client().get_run(run_id).data.tags
    assert tags["mlflow.source.git.commit"] == head(repo) + "-dirty"
    assert tags["llm.git.dirty_files"] == "params.yaml"
    node = lineage.trace(run_id)
    assert node["dirty_files"] == ["params.yaml"]
    assert "differed from the commit: params.yaml" in lineage.render(node)


def test_contains_finds_a_url_prefix_and_takes_every_output_downstream_in_the_dag(tmp_path):
    import mlflow
    import networkx as nx
    import pandas as pd

    from tasks import lineage
    from tasks.dag import Workspace
    from tests.conftest import make_workspace

    ws = Workspace(make_workspace(tmp_path / "ws"))
    data = ws.root / "data"
    for folder in ("ingest", "clean/removed", "curate"):
        (data / folder).mkdir(parents=True)
    pd.DataFrame({"url": ["https://a.example/x", "https://a.example/x2", "https://b.example/x"]}).to_parquet(
        data / "ingest/records-00000.parquet")
    pd.DataFrame({"url": ["https://a.example/x"], "text": ["kept"]}).to_parquet(data / "clean/docs-00000.parquet")
    pd.DataFrame({"url": ["https://a.example/x2"], "step": ["c4"], "rule": ["too_short"]}).to_parquet(
        data / "clean/removed/records-00000-filters.parquet")
    pd.DataFrame({"id": ["wiki/0"], "text": ["curated"]}).to_parquet(data / "curate/docs-00000.parquet")
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        report = lineage.contains(ws, "http://A.example/x")  # another scheme, upper case: the same pages
    finally:
        mlflow.set_tracking_uri(before)

    assert report["found"] == {
        "ingest": {"records": 2, "files": ["records-00000.parquet"], "removed": {}},
        "clean": {"records": 1, "files": ["docs-00000.parquet"], "removed": {"c4/too_short": 1}}}
    graph = nx.DiGraph([(up, spec.name) for spec in ws.stages for up in spec.upstream])
    stages = [o["stage"] for o in report["outputs"]]
    assert set(stages) == {"ingest"} | nx.descendants(graph, "ingest")  # everything built on the crawl
    assert stages[:3] == ["ingest", "clean", "mix"] and "curate" not in stages  # curate reads no crawl record
    assert report["runs"] == [] and report["model_versions"] == []
    assert "clean.url.blocklist" in report["rebuild"]


def test_a_long_list_of_raw_sources_stays_valid_json_in_its_tag_and_whole_in_an_artifact(tmp_path):
    """A folder of saved HTML pages is hundreds of raw files: more than an MLflow tag holds."""
    import json

    import mlflow

    from tasks import tracking

    files = [f"/data/html/page-{i:04d}.html.gz" for i in range(400)]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        with mlflow.start_run() as run:
            tracking.record_lineage(tmp_path, run.info.run_id, {"deps": [], "outs": []}, {}, files)
    finally:
        mlflow.set_tracking_uri(previous)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    tags = client.get_run(run.info.run_id).data.tags
    in_tag = json.loads(tags["llm.raw_sources"])
    assert 0 < len(in_tag) < len(files) and in_tag == files[:len(in_tag)] and tags["llm.raw_sources_count"] == "400"
    assert json.loads((Path(client.download_artifacts(run.info.run_id, "lineage/raw_sources.json"))).read_text()) == files
