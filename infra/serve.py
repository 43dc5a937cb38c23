"""`llm-lifecycle serve` and `chat`: a model behind an OpenAI-compatible server (`/v1/chat/completions`, plain
and streaming, and `/v1/models`), started and stopped like the rest of the local stack.

A model is named the way the pipeline knows it: a registered version (`models:/NAME/VERSION` or
`models:/NAME/latest`, downloaded once into .llm-lifecycle/serve/), a stage's output (`sft` → data/sft), a
Hugging Face folder, or a hub id. The server is `transformers serve` (CPU, or GPU), or vLLM with `--engine
vllm` (GPU). It runs in its own process group, recorded by infra/stack.py, so `serve --stop` and `stack down`
stop exactly it. The model id clients send is the folder's absolute path (or the hub id): the one the server
answers to.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from components.storage import staged_dir
from infra import stack
from tasks.dag import StageError, Workspace
from tasks.tracking import default_tracking_uri

ENGINES = ("transformers", "vllm")
LOOPBACK = "127.0.0.1"
PREFERRED_PORT = 8000
REGISTRY = "models:/"
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
WHAT_TO_DO = ("What to do: read the log's last lines above. Usual causes: the port is taken (--port); the folder "
              "is not a complete Hugging Face model (it must load with AutoModelForCausalLM.from_pretrained); a hub "
              "id without internet (download it, then serve the folder); a large model needs longer (--timeout).")


class ServeError(RuntimeError):
    """A model that cannot be found or served; the message says what to do."""


@dataclass(frozen=True)
class Model:
    spec: str  # as the user named it
    name: str  # the server's name: in `stack status`, for `serve --stop NAME`
    source: str  # what the server loads and the model id clients send: an absolute folder path, or a hub id

    @property
    def local(self) -> bool:
        return Path(self.source).is_dir()


def resolve(spec: str, ws: Workspace) -> Model:
    """The model `spec` names: models:/NAME/VERSION (or latest), an HF folder, a hub id (org/name), or a stage."""
    if spec.startswith(REGISTRY):
        return _registered(spec, ws)
    path = Path(spec).expanduser()
    if path.is_dir():
        return Model(spec, _server_name(path.resolve().name), _model_folder(path.resolve()))
    if HUB_ID.fullmatch(spec) and not path.parent.exists():  # data/sft before it is built is no hub id
        return Model(spec, _server_name(spec.rsplit("/", 1)[1]), spec)
    try:
        stage = ws.stage(spec)
    except StageError as err:
        raise ServeError(f"{spec!r} is no model folder, hub id, models:/NAME/VERSION or stage: {err}") from None
    return Model(spec, _server_name(stage.name), _model_folder(ws.root / stage.data_out, stage.name))


def _registered(spec: str, ws: Workspace) -> Model:
    """A version from the MLflow Model Registry (MLFLOW_TRACKING_URI, else the workspace's embedded one), its
    `model` artifact folder downloaded once into .llm-lifecycle/serve/models/NAME/VERSION-<source digest>/."""
    name, _, version = spec.removeprefix(REGISTRY).rpartition("/")
    if not name or not (version.isdigit() or version == "latest"):
        raise ServeError(f"{spec}: expected models:/NAME/VERSION or models:/NAME/latest")
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    uri = default_tracking_uri(ws.root)
    found = MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name = '{name}'")
    versions = {int(v.version): v.source for v in found}
    number = max(versions, default=None) if version == "latest" else int(version)
    if number not in versions:
        raise ServeError(f"{spec} is not in the registry at {uri} (versions of {name}: {sorted(versions) or 'none'}); "
                         "MLFLOW_TRACKING_URI chooses the registry")
    source = versions[number]
    # the digest keeps apart same-numbered versions of different registries (the stack's, the embedded one)
    cache = ws.state_dir / "serve" / "models" / name / f"{number}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    if not (cache / "model").is_dir():
        with staged_dir(cache) as staging:  # an interrupted download leaves no half folder to serve later
            Path(download_artifacts(artifact_uri=source, dst_path=str(staging), tracking_uri=uri)).rename(
                staging / "model")
    return Model(spec, _server_name(f"{name}-{number}"), _model_folder(cache / "model"))


def _model_folder(folder: Path, stage: str | None = None) -> str:
    if (folder / "config.json").is_file():
        return str(folder)
    ran = f"; is {stage} a model stage, and has it run (llm-lifecycle run --stages {stage})?" if stage else ""
    raise ServeError(f"{folder} holds no Hugging Face model (no config.json){ran}")


def _server_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", text).strip("-") or "model"


def start(model: Model, engine: str = "transformers", host: str = LOOPBACK, port: int | None = None,
          name: str | None = None, device: str = "auto", timeout_s: float = 300, allow_remote: bool = False,
          temporary: bool = False) -> dict:
    """Start a server for `model` in the background and wait until it answers; returns its record (name, pid,
    base_url, model, log, ...). A healthy server of the same name and model is returned as it is (`reused`).
    `temporary`: a server that a `chat` stops when it ends, which no other command reuses."""
    if not (is_loopback(host) or allow_remote):
        raise ServeError(f"--host {host} lets every machine that reaches this one use the model, with no "
                         "authentication; add --allow-remote to do it anyway")
    command = _engine_command(engine)
    name = name or model.name
    running = _same_name(name, model)
    if running:
        return running | {"reused": True}
    port = port or free_port(host, PREFERRED_PORT)
    url = f"http://{_url_host(host)}:{port}"
    command += [model.source, "--host", host, "--port", str(port)]
    if engine == "transformers":
        command += ["--device", device]
    env = os.environ | stack.QUIET | {"PYTHONUNBUFFERED": "1"}
    if model.local:
        env["HF_HUB_OFFLINE"] = "1"  # a folder needs nothing from the hub: never wait on it offline
    started = time.monotonic()
    server = stack.start_service(f"serve-{name}", command, env, f"{url}/health") | {
        "base_url": f"{url}/v1", "model": model.source, "spec": model.spec, "engine": engine, "temporary": temporary}
    stack.record_model_server(name, server)
    try:
        stack.wait_healthy(f"model server {name}", server["health"], Path(server["log"]), timeout_s, server["pid"])
    except RuntimeError as err:
        stack.stop_model_servers([name])
        raise ServeError(f"{err}\n{WHAT_TO_DO}") from None
    except BaseException:  # Ctrl-C while it loads: leave nothing behind
        stack.stop_model_servers([name])
        raise
    return server | {"name": name, "start_s": round(time.monotonic() - started, 1)}


def _engine_command(engine: str) -> list[str]:
    if engine == "transformers":
        return [stack.venv_bin("transformers"), "serve"]
    if engine != "vllm":
        raise ServeError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    # vLLM pins its own torch and transformers, so it usually has a venv of its own: its bin/ on PATH will do
    vllm = shutil.which("vllm", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not vllm:
        raise ServeError("vLLM is not installed: on a Linux machine with an NVIDIA GPU, `pip install vllm` (into a "
                         "venv of its own is safest) and put its bin/ on PATH; on CPU use --engine transformers")
    return [vllm, "serve"]


def _same_name(name: str, model: Model) -> dict | None:
    """The healthy server `name` when it already serves `model`; None when the name is free."""
    server = stack.model_servers().get(name)
    if server is None:
        return None
    if stack.group_alive(server["pid"]) and stack.is_healthy(server["health"]):
        if server["model"] == model.source:
            return server | {"name": name}
        raise ServeError(f"model server {name} already serves {server['spec']} at {server['base_url']}: choose "
                         f"another --name, or stop it (llm-lifecycle serve --stop {name})")
    stack.stop_model_servers([name])  # a record whose server died (or hangs): the name is free again
    return None


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def _url_host(host: str) -> str:
    address = LOOPBACK if host in ("0.0.0.0", "::") else host  # listening everywhere includes loopback
    return f"[{address}]" if ":" in address else address


def free_port(host: str = LOOPBACK, preferred: int = 0) -> int:
    """`preferred` when it is free on `host`, else a port the OS finds free."""
    if preferred and stack.port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, 0))
        except OSError as err:
            raise ServeError(f"no free port on {host}: {err}") from None
        return probe.getsockname()[1]


def stop(target: str | None = None) -> list[str]:
    """Stop the model servers `target` names (a server's name, or the model as it was named to `serve`); all of
    them for None or "all". Returns the names stopped."""
    if target in (None, "all"):
        return stack.stop_model_servers()
    servers = stack.model_servers()
    names = [name for name, server in servers.items() if target in (name, server["spec"])]
    if not names:
        raise ServeError(f"no model server {target!r}; running: {', '.join(servers) or 'none'}")
    return stack.stop_model_servers(names)


@contextmanager
def server_for(model: Model, **start_options):
    """A healthy server for `model`: one already running (not another chat's), or one started for the block
    (`temporary` in its record) and stopped after it."""
    for name, server in stack.model_servers().items():
        if server["model"] == model.source and not server["temporary"] and stack.is_healthy(server["health"]):
            yield server | {"name": name}
            return
    # any free port: 8000 stays for `serve`, whose port people write down
    server = start(model, port=free_port(), name=f"{model.name}-chat-{os.getpid()}", temporary=True, **start_options)
    try:
        yield server
    finally:
        stack.stop_model_servers([server["name"]])


def converse(base_url: str, model_id: str, system: str | None = None, **sampling) -> None:
    """A terminal chat: each line read is a user turn and the reply streams back; the whole conversation goes
    with every turn. `/reset` forgets it (the system prompt stays), `/exit` or the end of input leaves."""
    from openai import OpenAIError

    from components.openai_client import chat_completion

    opening = [{"role": "system", "content": system}] if system else []
    history = list(opening)
    while (line := _read_turn()) is not None and line != "/exit":
        if line == "/reset":
            history = list(opening)
            print("(conversation reset)")
        elif line:
            turn = {"role": "user", "content": line}
            try:
                reply = _print_stream(chat_completion(base_url, model_id, [*history, turn], stream=True, **sampling))
            except OpenAIError as err:  # the turn is dropped; the conversation goes on
                print(f"\nerror: {err}", file=sys.stderr)
            else:
                history += [turn, {"role": "assistant", "content": reply}]


def _read_turn() -> str | None:
    try:
        return input("you> ").strip()
    except EOFError:
        return None


def _print_stream(chunks) -> str:
    """Print a streamed reply as it comes; return it whole."""
    print("assistant> ", end="", flush=True)
    parts, finish = [], None
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
                print(choice.delta.content, end="", flush=True)
            finish = choice.finish_reason or finish
    print(" [cut: max tokens]" if finish == "length" else "")
    return "".join(parts)
