"""Secrets stay in the environment: plant an S3 secret key and an LLM-judge API key, run the stages that use them
(the judged evaluation `evaluate@sft` against a local OpenAI-compatible endpoint serving a tiny chat model,
its outputs `dvc push`ed to an S3 remote, MLflow's artifacts on the same S3), then search every store for them:
MLflow's database and artifacts, Prefect's database (logs, artifacts, states), the run log, DVC's config, lock and
remote, and every file of the workspace (reports, data, caches).

The keys are handed over as the project documents: the judge's by the name of the variable holding it
(`api_key_env`), S3's by the AWS variables; neither is ever a parameter."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_workspace
from tests.integration.conftest import prefect_api  # noqa: F401  (a temporary Prefect server; its database is searched)
from tests.integration.test_serve import model_dir  # noqa: F401  (a tiny chat model folder: the judge)
from tests.unit.test_evaluate import make_model

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(2400), pytest.mark.serve, pytest.mark.usefixtures("prefect_api")]

S3_SECRET = "s3-secret-planted-7f3a9c1e5b"
JUDGE_KEY = "sk-judge-planted-4d2b8e6a0c"
JUDGE_KEY_VARIABLE = "LLM_LIFECYCLE_TEST_JUDGE_KEY"
BUCKET = "secrets-test"
BIN = Path(sys.executable).parent


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """A moto S3 server on a free loopback port, reached with the planted secret key from the environment."""
    import boto3

    from infra.serve import free_port

    port = free_port()
    log = open(tmp_path / "moto.log", "wb")
    server = subprocess.Popen([BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    for var, value in {"AWS_ACCESS_KEY_ID": "planted-id", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                       "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": url}.items():
        monkeypatch.setenv(var, value)
    client = boto3.client("s3", endpoint_url=url)
    deadline = time.monotonic() + 120  # moto starts in seconds; a loaded machine gets a wide margin
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(1)
    yield client, url
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture
def ws(tmp_path, workspace_env, s3, monkeypatch):
    """A workspace whose SFT model is a small untrained model and whose mix is two documents (as the evaluate stage
    test makes them), its DVC remote and MLflow artifacts on the S3 server: no key in any config."""
    import mlflow

    from tasks.tracking import EXPERIMENT, client

    ws = workspace_env(make_workspace(tmp_path / "ws"))
    make_model(ws / "data/sft", seq_len=512, seed=2)  # a window that holds the tiny preset's longest answer
    (ws / "data/mix").mkdir()
    pd.DataFrame({"id": ["c4/1", "c4/2"], "text": ["A document of the mix.", "Another one."],
                  "epoch": [0, 0]}).to_parquet(ws / "data/mix/pretrain-00000.parquet")
    _, url = s3
    for args in (["remote", "add", "--local", "--default", "s3", f"s3://{BUCKET}/dvc"],
                 ["remote", "modify", "--local", "s3", "endpointurl", url]):
        subprocess.run([BIN / "dvc", *args], cwd=ws, check=True, capture_output=True)
    monkeypatch.setenv(JUDGE_KEY_VARIABLE, JUDGE_KEY)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])  # an earlier run in this process set another
    client().create_experiment(EXPERIMENT, artifact_location=f"s3://{BUCKET}/mlartifacts")
    return ws


def holders(secret: str, files: dict[str, bytes]) -> list[str]:
    return [name for name, data in files.items() if secret.encode() in data]


def project_source(ws: Path) -> set[str]:
    """The project's files as make_workspace committed them and the run left them (this test's own source holds
    the keys as literals): every other file of the workspace (written, changed or git-ignored) is searched."""
    def listed(*options: str) -> set[str]:
        return set(subprocess.run(["git", "ls-files", *options], cwd=ws, capture_output=True, text=True,
                                  check=True).stdout.splitlines())

    return listed() - listed("--modified", "--deleted")


def stores(ws: Path, s3_client) -> dict[str, bytes]:
    """Every file that might hold a key: the workspace (reports, data, dvc config and lock, .llm-lifecycle: logs,
    caches), MLflow's database, Prefect's database, every object on the S3 server (DVC remote, MLflow artifacts)."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    # the run's logs are sent in batches: all of them reach the database before the search (seconds; wide margin)
    APILogWorker.drain_all(timeout=60)

    source = project_source(ws)
    files = {str(p): p.read_bytes() for p in ws.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(ws).parts and str(p.relative_to(ws)) not in source}
    mlflow_db = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    prefect_db = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    for store, db in (("mlflow-db", mlflow_db), ("prefect-db", prefect_db)):
        for path in db.parent.glob(db.name + "*"):  # the database and its -wal / -journal
            files[f"{store}:{path}"] = path.read_bytes()
    for obj in s3_client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        files[f"s3://{BUCKET}/{obj['Key']}"] = s3_client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    return files


def test_planted_keys_appear_in_no_store_after_a_judged_run_pushed_to_s3(ws, s3, model_dir, capfd):  # noqa: F811
    from infra import serve
    from tasks.dag import Workspace
    from tests.integration.test_pipeline import run

    s3_client, _ = s3
    with serve.server_for(serve.resolve(str(model_dir), Workspace(ws)), device="cpu") as judge:
        reference = Path(os.environ["LLM_LIFECYCLE_DATA_DIR"]) / "eval/alpaca_eval/results/gpt4_1106_preview/model_outputs.json"
        outcomes, states = run(stages=["evaluate@sft"], push=True, overrides={"evaluate.judge": {
            "reference": {"uri": str(reference)}, "max_items": 2, "max_new_tokens": 8,
            "base_url": judge["base_url"], "model": judge["model"], "api_key_env": JUDGE_KEY_VARIABLE}})
    assert states == {"evaluate@sft": "Completed"}, outcomes
    output = capfd.readouterr()

    files = stores(ws, s3_client)
    assert any(name.startswith(f"s3://{BUCKET}/dvc/") for name in files)  # the push went to S3
    assert any(name.startswith(f"s3://{BUCKET}/mlartifacts/") for name in files)  # and MLflow's artifacts
    assert list((ws / ".llm-lifecycle/judge-cache").glob("*.json"))  # the judge was asked, with its key
    # the search reads these stores: the judge's address, a parameter, is in MLflow's and Prefect's databases
    found = holders(judge["base_url"], files)
    assert any(name.startswith("mlflow-db:") for name in found) and any(name.startswith("prefect-db:") for name in found)
    assert holders(S3_SECRET, files) == [] and holders(JUDGE_KEY, files) == []
    for text in (output.out, output.err):  # what the run printed
        assert S3_SECRET not in text and JUDGE_KEY not in text
