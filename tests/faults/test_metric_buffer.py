"""Training's metrics while the tracking server is away: buffered without blocking, sent with their own steps
when it is back. (The real outage, a killed MLflow server mid-pretraining, is in test_stack_faults.py.)"""
from __future__ import annotations

import time

import pytest

from tasks import tracking
from tests.faults.stackctl import free_ports


@pytest.fixture
def tracking_uri():
    """Set MLflow's tracking URI for the test; the previous one comes back afterwards."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    yield mlflow.set_tracking_uri
    mlflow.set_tracking_uri(previous)


def test_metrics_wait_while_the_server_is_away_and_arrive_with_their_steps(tmp_path, tracking_uri):
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking_uri(store)
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("buffer")).info.run_id
    handle = tracking.RunHandle(run_id)

    tracking_uri(f"http://127.0.0.1:{free_ports(1)[0]}")  # a server that is not there
    started = time.monotonic()
    assert handle.buffer_metrics({"loss": 2.5}, step=10) is False
    assert handle.buffer_metrics({"loss": 2.0, "lr": 0.01}, step=20) is False
    assert time.monotonic() - started < 5, "buffering blocked the caller: MLflow's own retries take minutes"
    gap = handle.flush_metrics(wait_s=0)
    assert [(m.key, m.step) for m in gap] == [("loss", 10), ("loss", 20), ("lr", 20)]

    tracking_uri(store)  # the server is back
    assert handle.buffer_metrics({"loss": 1.5}, step=30) is True
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    assert sorted(history) == [(10, 2.5), (20, 2.0), (30, 1.5)]
    assert handle.flush_metrics(wait_s=0) == []
