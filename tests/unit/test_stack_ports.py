"""`stack up` refuses a port another process holds, before it starts anything: the health check would otherwise
answer from that process (another workspace's stack), and this workspace would run against servers not its own."""
from __future__ import annotations

import socket

import pytest

from infra import stack


@pytest.fixture
def held_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_held_port_is_refused_with_what_to_do(held_port):
    with pytest.raises(RuntimeError, match=rf"port {held_port} on 127.0.0.1 is in use.*LLM_LIFECYCLE_MLFLOW_PORT"):
        stack.require_free_port("mlflow", held_port)


def test_a_free_port_passes():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stack.require_free_port("prefect", port)


def test_nothing_starts_when_a_port_is_held(held_port, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_LIFECYCLE_PREFECT_PORT", str(held_port))
    monkeypatch.setattr(stack, "_state_dir", lambda: tmp_path)
    started = []
    monkeypatch.setattr(stack, "start_service", lambda *args, **kwargs: started.append(args) or {"pid": 0})
    with pytest.raises(RuntimeError, match="prefect cannot start"):
        stack._start_servers({"s3": False, "services": {}}, ["mlflow", "prefect"])
    assert started == []


def test_a_model_server_takes_another_port_when_its_preferred_one_is_held(held_port):
    from infra.serve import free_port

    chosen = free_port("127.0.0.1", held_port)
    assert chosen != held_port and stack.port_is_free(chosen)
    assert free_port("127.0.0.1", chosen) == chosen
