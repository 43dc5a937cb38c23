"""The local stack on 127.0.0.1: a Prefect server, a process worker and an MLflow server, plus (with
`--s3`) a moto S3 server that holds the DVC remote and MLflow's artifacts.

Each service runs in its own process group, recorded in .llm-lifecycle/stack/state.json, so `down`
stops exactly what `up` started (and their children), and nothing else. Model servers (`llm-lifecycle
serve`, infra/serve.py) are started the same way and recorded beside it, in model-servers.json: `status`
lists them and `down` stops them too, but restarting the stack leaves them running.
"""
from __future__ import annotations

import json
import os
import signal
import socket
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


def venv_bin(name: str) -> str:
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
        services["s3"] = {"cmd": [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(_port("s3"))],
                          "health": f"http://127.0.0.1:{_port('s3')}/moto-api/"}
    services["prefect"] = {
        "cmd": [venv_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(_port("prefect"))],
        "env": {"PREFECT_HOME": str(state / "prefect")},
        "health": f"http://127.0.0.1:{_port('prefect')}/api/health"}
    services["mlflow"] = {
        "cmd": [venv_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(_port("mlflow")), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
                "--artifacts-destination", artifacts, "--serve-artifacts"],
        "env": {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # else ~2 GB of job workers
        "health": f"http://127.0.0.1:{_port('mlflow')}/health"}
    return services


# The worker runs the stages with the environment it was started with: a stack started without these (or
# with other values) would run every flow the old way, so `up` restarts it when they differ.
WORKER_SETTINGS = ("LLM_LIFECYCLE_DATA_DIR", "LLM_LIFECYCLE_DVC_REMOTE", "LLM_LIFECYCLE_WORKSPACE")
# Seconds between a flow run's heartbeats (Prefect's minimum): the automation infra/deployments.py registers
# marks a run Crashed when they stop, i.e. its worker or process died.
HEARTBEAT_S = 30


def up(s3: bool = False) -> str:
    """Start the stack; if it is up already, start only the services that are down (a dead worker does not
    restart healthy servers), or restart it all when the worker's settings changed."""
    settings = {key: os.environ.get(key) for key in WORKER_SETTINGS}
    previous = _load_state()
    restart = ""
    if previous.get("services"):
        changed = [k for k in WORKER_SETTINGS if previous.get("settings", settings).get(k) != settings[k]]
        changed += ["--s3"] if s3 and not previous.get("s3") else []
        if not changed:
            return _start_what_is_down(previous)
        restart = f"restarted: {', '.join(changed)} changed since the stack started\n"
        _stop_services()
    started = time.monotonic()
    state = {"s3": s3, "settings": settings, "services": {}}
    try:
        _start_servers(state, list(_services(_state_dir(), s3)))
        env = _env(s3)
        _run([venv_bin("prefect"), "work-pool", "create", POOL, "--type", "process", "--overwrite"], env)
        _run([sys.executable, "-m", "infra.deployments"], env)  # and the crash detection automation
        _start_worker(state)
    except BaseException:
        _stop_services()
        raise
    report, _ = status()
    return f"{restart}stack up in {time.monotonic() - started:.1f} s\n{report}"


def _env(s3: bool) -> dict[str, str]:
    return os.environ | QUIET | client_env(s3)


def _start_servers(state: dict, names: list[str]) -> None:
    """Start these servers (in order), recording each in the state file as it starts, then wait for them."""
    folder = _state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    services, env = _services(folder, state["s3"]), _env(state["s3"])
    for name in names:
        require_free_port(name, _port(name))
    for name in names:
        state["services"][name] = start_service(name, services[name]["cmd"], env | services[name].get("env", {}),
                                                services[name]["health"])
        _save_state(state)
    for name in names:
        wait_healthy(name, services[name]["health"], folder / f"{name}.log", pid=state["services"][name]["pid"])
    if "s3" in names:  # moto keeps its buckets in memory: a restarted one starts empty
        _create_bucket(env)
        _configure_dvc_s3()


def _start_worker(state: dict) -> None:
    # polled every 2 s (Prefect's default 10): a run waits on average half of it before it starts, and the
    # no-op rerun of the whole DAG is ≈ 15 s (benchmarks/RESULTS.md); one small query per poll on a local server
    env = _env(state["s3"]) | {"PREFECT_WORKER_QUERY_SECONDS": "2",
                               "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}
    cmd = [venv_bin("prefect"), "worker", "start", "--pool", POOL, "--type", "process"]
    state["services"]["worker"] = start_service("worker", cmd, env, None)
    _save_state(state)


def _start_what_is_down(state: dict) -> str:
    """Restart the services that died or stopped answering, leave the healthy ones alone."""
    down = [name for name, svc in state["services"].items() if _is_down(svc)]
    if not down:
        return "already up\n" + status()[0]
    started = time.monotonic()
    servers = [name for name in down if name != "worker"]
    for name in servers:  # what is left of a hung or half-dead server would hold its port
        _stop_group(state["services"][name]["pid"])
    _start_servers(state, servers)
    if "worker" in down:  # its flow runs, if any outlived it, run on; Prefect crashes them if they died too
        _start_worker(state)
    return f"restarted {', '.join(down)} (down) in {time.monotonic() - started:.1f} s\n{status()[0]}"


def start_service(name: str, cmd: list[str], env: dict, health: str | None) -> dict:
    """Start `cmd` in its own process group, its output appended to .llm-lifecycle/stack/NAME.log."""
    log = _state_dir() / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=Workspace().root, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return {"pid": proc.pid, "log": str(log), "health": health}


def require_free_port(name: str, port: int) -> None:
    """Fail before starting `name` if something else holds its port: its health check would answer from that
    process (another workspace's stack, say), and this workspace would run against servers that are not its own."""
    if not port_is_free(port):
        raise RuntimeError(f"{name} cannot start: port {port} on 127.0.0.1 is in use by another process (another "
                           f"workspace's stack? `llm-lifecycle stack down` there), or choose another port with "
                           f"LLM_LIFECYCLE_{name.upper()}_PORT")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now; one in TIME_WAIT counts as free (servers set SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def wait_healthy(name: str, url: str, log: Path, timeout_s: float = 300, pid: int | None = None) -> None:
    """Wait until `url` answers 200; fail after `timeout_s` (a Prefect server took over 90 s on 2 cores under a
    load of 14), or as soon as the service `pid` has exited."""
    deadline, why = time.monotonic() + timeout_s, f"did not become healthy at {url} within {timeout_s:.0f} s"
    while time.monotonic() < deadline:
        if is_healthy(url):
            return
        if pid is not None and not group_alive(pid):
            why = "exited before it became healthy"
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"{name} {why}; its log {log} ends:\n{tail}")


def is_healthy(url: str | None) -> bool:
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
        subprocess.run([venv_bin("dvc"), *cmd], cwd=root, check=True, capture_output=True)


def status() -> tuple[str, bool]:
    """The report, and whether the stack's services are all healthy (model servers are listed, not counted)."""
    state = _load_state()
    if not state.get("services"):
        return "\n".join(["stack is down", *_model_server_lines()]), False
    lines, healthy = [], True
    for name, svc in state["services"].items():
        ok = service_ok(svc)
        healthy &= ok
        where = svc.get("health") or f"pool {POOL}"
        lines.append(f"{name:<8} {'healthy' if ok else 'DOWN':<8} pid {svc['pid']:<8} {where}  (log {svc['log']})")
    env = client_env(state.get("s3"))
    lines += ["", f"Prefect UI: {env['PREFECT_UI_URL']}", f"MLflow UI:  {env['MLFLOW_TRACKING_URI']}",
              'Point the prefect and mlflow CLIs at it: eval "$(llm-lifecycle stack env)"', *_model_server_lines()]
    return "\n".join(lines), healthy


def _model_server_lines() -> list[str]:
    servers = model_servers()
    lines = ["", "Model servers (OpenAI-compatible; stop with: llm-lifecycle serve --stop NAME):"] if servers else []
    for name, server in servers.items():
        ok = group_alive(server["pid"]) and is_healthy(server["health"])
        lines.append(f"{name:<8} {'healthy' if ok else 'DOWN':<8} pid {server['pid']:<8} {server['base_url']}  "
                     f"model {server['model']}  ({server['spec']}, {server['engine']}; log {server['log']})")
    return lines


def down() -> str:
    """Stop exactly what `up` and `llm-lifecycle serve` started."""
    models = stop_model_servers()
    services = _stop_services()
    return f"stopped {', '.join(services + [f'model server {name}' for name in models]) or 'nothing'}"


def _stop_services() -> list[str]:
    services = _load_state().get("services", {})
    for svc in reversed(services.values()):  # the worker first, the servers it talks to last
        _stop_group(svc["pid"])
    _state_file().unlink(missing_ok=True)
    return list(services)


def model_servers() -> dict[str, dict]:
    """The running model servers: name → pid, log, health URL, base_url, model id, spec, engine."""
    path = _model_servers_file()
    return json.loads(path.read_text()) if path.exists() else {}


def record_model_server(name: str, server: dict) -> None:
    _save_model_servers(model_servers() | {name: server})


def stop_model_servers(names: list[str] | None = None) -> list[str]:
    """Stop these model servers (all without names) and forget them; returns the names stopped."""
    servers = model_servers()
    stopped = [name for name in servers if names is None or name in names]
    for name in stopped:
        _stop_group(servers.pop(name)["pid"])
    _save_model_servers(servers)
    return stopped


def _model_servers_file() -> Path:
    return _state_dir() / "model-servers.json"


def _save_model_servers(servers: dict[str, dict]) -> None:
    _model_servers_file().parent.mkdir(parents=True, exist_ok=True)
    _model_servers_file().write_text(json.dumps(servers, indent=2))


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


def _is_down(svc: dict, patience_s: float = 60) -> bool:
    """Dead, or alive but not answering for `patience_s`: a server on a busy machine may answer late (and must not
    be killed for it), a hung one never does."""
    deadline = time.monotonic() + patience_s
    while process_alive(svc["pid"]):
        if is_healthy(svc.get("health")):
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(1)
    return True


def service_ok(svc: dict) -> bool:
    """The service's own process runs (not only a child it left behind) and answers its health check."""
    return process_alive(svc["pid"]) and is_healthy(svc.get("health"))


def process_alive(pid: int) -> bool:
    try:  # a service this process started stays a zombie until it is reaped
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of a service's group (it leads its own session) is still running."""
    try:  # a service this process started stays a zombie, alive to killpg, until it is reaped
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:  # started by another process, or reaped already
        pass
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
