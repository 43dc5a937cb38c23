"""Drive a real local stack from a test: free ports, the CLI, the Prefect REST API, the listening sockets of
the stack's processes, and killing a service the way a crash would (SIGKILL to its whole process group)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, distinct (held open together while chosen), so two suites can run at once."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stack_env(ws: Path, data_dir: Path, remote: Path) -> dict[str, str]:
    prefect, mlflow, s3 = free_ports(3)
    return os.environ | {
        "LLM_LIFECYCLE_WORKSPACE": str(ws), "LLM_LIFECYCLE_DATA_DIR": str(data_dir),
        "LLM_LIFECYCLE_DVC_REMOTE": str(remote), "LLM_LIFECYCLE_PREFECT_PORT": str(prefect),
        "LLM_LIFECYCLE_MLFLOW_PORT": str(mlflow), "LLM_LIFECYCLE_S3_PORT": str(s3)}


def cli(*args: str, env: dict, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def with_client_env(env: dict, cwd: Path) -> dict:
    """`env` plus what `llm-lifecycle stack env` exports (PREFECT_API_URL, MLFLOW_TRACKING_URI, ...)."""
    exports = cli("llm-lifecycle", "stack", "env", env=env, cwd=cwd).stdout
    return env | dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())


def stack_state(ws: Path) -> dict:
    return json.loads((ws / ".llm-lifecycle/stack/state.json").read_text())


def listening(ws: Path) -> list[tuple[str, str, int]]:
    """(service, address, port) of every listening TCP socket held by a process of the stack's services."""
    groups = {svc["pid"]: name for name, svc in stack_state(ws)["services"].items()}
    found = []
    for proc in psutil.process_iter():
        try:
            name = groups.get(os.getpgid(proc.pid))
            if name:
                found += [(name, c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                          if c.status == psutil.CONN_LISTEN]
        except (psutil.Error, ProcessLookupError):
            continue  # exited while we looked
    return found


def crash(pid: int) -> None:
    """SIGKILL the process group led by `pid` and every descendant that left it (as a machine crash would)."""
    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    os.killpg(pid, signal.SIGKILL)
    for proc in family:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


class Prefect:
    """The few REST calls the fault tests need, against the stack's Prefect server."""

    def __init__(self, api_url: str):
        self.api = api_url.rstrip("/")

    def call(self, path: str, body: dict | None = None, method: str | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method or ("POST" if data else "GET"),
                                         headers={"Content-Type": "application/json"})
        for attempt in range(12):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as err:  # 503: a server just (re)started is not serving yet
                if err.code != 503 or attempt == 11:
                    raise
                time.sleep(5)

    def trigger(self, deployment: str, parameters: dict) -> str:
        """Create a flow run of `flow/deployment` with `parameters`; returns its id (the worker picks it up)."""
        found = self.call(f"/deployments/name/{deployment}")
        return self.call(f"/deployments/{found['id']}/create_flow_run", {"parameters": parameters})["id"]

    def state(self, flow_run_id: str) -> dict:
        return self.call(f"/flow_runs/{flow_run_id}")["state"]

    def wait_state(self, flow_run_id: str, types: set[str], timeout_s: float) -> dict:
        """Poll until the run's state type is one of `types`; fail saying where it stuck."""
        deadline, state = time.monotonic() + timeout_s, {}
        while time.monotonic() < deadline:
            try:
                state = self.state(flow_run_id)
            except OSError:  # the server is being restarted by the test
                pass
            if state.get("type") in types:
                return state
            time.sleep(3)
        raise AssertionError(f"flow run {flow_run_id} not in {types} after {timeout_s:.0f} s: last state {state}")

    def task_states(self, flow_run_id: str) -> dict[str, str]:
        """Stage name → the state name of its task run in that flow run (e.g. Completed, Skipped)."""
        runs = self.call("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
        return {run["name"]: run["state"]["name"] for run in runs}
