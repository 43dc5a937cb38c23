"""The local stack on 127.0.0.1: a Prefect server, a process worker and an MLflow server, plus (with
`--s3`) a moto S3 server that holds the DVC remote and MLflow's artifacts.

Each service runs in its own process group, recorded in .llm-lifecycle/stack/state.json, so `down`
stops exactly what `up` started (and their children), and nothing else.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tasks.dag import Workspace

POOL = "llm-lifecycle"
BUCKET = "llm-lifecycle"
PORTS = {"prefect": 4200, "mlflow": 5000, "s3": 9000}
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
         "GX_ANALYTICS_ENABLED": "false"}


def _port(name: str) -> int:
    return int(os.environ.get(f"LLM_LIFECYCLE_{name.upper()}_PORT", PORTS[name]))


def _state_dir() -> Path:
    return Workspace().state_dir / "stack"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def client_env(s3: bool | None = None) -> dict[str, str]:
    """What a client (CLI, worker, flow run) needs to talk to the stack."""
    if s3 is None:
        s3 = _load_state().get("s3", False)
    env = {"PREFECT_API_URL": f"http://127.0.0.1:{_port('prefect')}/api",
           "PREFECT_UI_URL": f"http://127.0.0.1:{_port('prefect')}",
           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_port('mlflow')}"}
    if s3:
        env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{_port('s3')}"}
    return env


def _services(state: Path, s3: bool) -> dict[str, dict]:
    """name → command, extra environment and health URL, in start order."""
    artifacts = f"s3://{BUCKET}/mlartifacts" if s3 else str(state / "mlartifacts")
    services = {}
    if s3:
        services["s3"] = {"cmd": [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(_port("s3"))],
                          "health": f"http://127.0.0.1:{_port('s3')}/moto-api/"}
    services["prefect"] = {
        "cmd": [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(_port("prefect"))],
        "env": {"PREFECT_HOME": str(state / "prefect")},
        "health": f"http://127.0.0.1:{_port('prefect')}/api/health"}
    services["mlflow"] = {
        "cmd": [_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(_port("mlflow")), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
                "--artifacts-destination", artifacts, "--serve-artifacts"],
        "env": {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # else ~2 GB of job workers
        "health": f"http://127.0.0.1:{_port('mlflow')}/health"}
    return services


# The worker runs the stages with the environment it was started with: a stack started without these (or
# with other values) would run every flow the old way, so `up` restarts it when they differ.
WORKER_SETTINGS = ("LLM_LIFECYCLE_DATA_DIR", "LLM_LIFECYCLE_DVC_REMOTE", "LLM_LIFECYCLE_WORKSPACE")


def up(s3: bool = False) -> str:
    state_dir = _state_dir()
    settings = {key: os.environ.get(key) for key in WORKER_SETTINGS}
    previous = _load_state()
    restart = ""
    if previous.get("services"):
        report, healthy = status()
        if healthy and previous.get("settings", settings) == settings:
            return "already up\n" + report
        if healthy:
            changed = [k for k in WORKER_SETTINGS if previous.get("settings", {}).get(k) != settings[k]]
            restart = f"restarted: {', '.join(changed)} changed since the stack started\n"
        down()
    state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = os.environ | QUIET | client_env(s3)
    state = {"s3": s3, "settings": settings, "services": {}}
    try:
        for name, svc in _services(state_dir, s3).items():
            state["services"][name] = _start(name, svc["cmd"], env | svc.get("env", {}), state_dir, svc["health"])
            _save_state(state)
        for name, svc in _services(state_dir, s3).items():
            _wait_healthy(name, svc["health"], state_dir / f"{name}.log")
        if s3:
            _create_bucket(env)
            _configure_dvc_s3()
        _run([_bin("prefect"), "work-pool", "create", POOL, "--type", "process", "--overwrite"], env)
        _run([sys.executable, "-m", "infra.deployments"], env)
        worker_env = env | {"PREFECT_WORKER_QUERY_SECONDS": "5"}
        state["services"]["worker"] = _start("worker", [_bin("prefect"), "worker", "start", "--pool", POOL,
                                                        "--type", "process"], worker_env, state_dir, None)
        _save_state(state)
    except BaseException:
        down()
        raise
    report, _ = status()
    return f"{restart}stack up in {time.monotonic() - started:.1f} s\n{report}"


def _start(name: str, cmd: list[str], env: dict, state_dir: Path, health: str | None) -> dict:
    log = state_dir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=Workspace().root, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return {"pid": proc.pid, "log": str(log), "health": health}


def _wait_healthy(name: str, url: str, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _healthy(url):
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"{name} did not become healthy at {url} within {timeout_s:.0f} s; its log {log} ends:\n{tail}")


def _healthy(url: str | None) -> bool:
    if url is None:
        return True
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _run(cmd: list[str], env: dict) -> None:
    out = subprocess.run(cmd, env=env, cwd=Workspace().root, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")


def _create_bucket(env: dict) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"], aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)


def _configure_dvc_s3() -> None:
    """The DVC remote on the loopback S3 server, in .dvc/config.local (machine-specific, not committed)."""
    root, url = Workspace().root, f"http://127.0.0.1:{_port('s3')}"
    for cmd in (["remote", "add", "--local", "--default", "--force", "s3", f"s3://{BUCKET}/dvc"],
                ["remote", "modify", "--local", "s3", "endpointurl", url],
                ["remote", "modify", "--local", "s3", "access_key_id", "testing"],
                ["remote", "modify", "--local", "s3", "secret_access_key", "testing"]):
        subprocess.run([_bin("dvc"), *cmd], cwd=root, check=True, capture_output=True)


def status() -> tuple[str, bool]:
    state = _load_state()
    if not state.get("services"):
        return "stack is down", False
    lines, healthy = [], True
    for name, svc in state["services"].items():
        alive = group_alive(svc["pid"])
        ok = alive and _healthy(svc.get("health"))
        healthy &= ok
        where = svc.get("health") or f"pool {POOL}"
        lines.append(f"{name:<8} {'healthy' if ok else 'DOWN':<8} pid {svc['pid']:<8} {where}  (log {svc['log']})")
    env = client_env(state.get("s3"))
    lines += ["", f"Prefect UI: {env['PREFECT_UI_URL']}", f"MLflow UI:  {env['MLFLOW_TRACKING_URI']}",
              'Point the prefect and mlflow CLIs at it: eval "$(llm-lifecycle stack env)"']
    return "\n".join(lines), healthy


def down() -> str:
    state = _load_state()
    services = list(state.get("services", {}).items())
    for name, svc in reversed(services):  # the worker first, the servers it talks to last
        _stop_group(svc["pid"])
    _state_file().unlink(missing_ok=True)
    return f"stopped {', '.join(n for n, _ in services) or 'nothing'}"


def _stop_group(pid: int, grace_s: float = 10) -> None:
    """SIGTERM the service's process group (twice: the Prefect worker ignores the first), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s / 2
        while time.monotonic() < deadline:
            if not group_alive(pid):
                return
            time.sleep(0.2)


def group_alive(pgid: int) -> bool:
    """Whether any process of a service's group (it leads its own session) is still running."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _state_file() -> Path:
    return _state_dir() / "state.json"


def _load_state() -> dict:
    path = _state_file()
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(state: dict) -> None:
    _state_file().write_text(json.dumps(state, indent=2))
