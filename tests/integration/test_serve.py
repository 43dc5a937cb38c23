"""Talking to a model: `llm-lifecycle serve` (a registered version, a stage, a folder) behind an OpenAI-compatible
server on a free loopback port, asked with the `openai` client, listed by `stack status`, stopped with its process
group; `llm-lifecycle chat` driven through stdin."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

for _var in ("DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

from tokenizers import pre_tokenizers, trainers

from components import openai_client
from components.model import ModelParams, build_model, export_hf
from components.openai_client import chat_completion
from components.tokenizer import SPECIAL_TOKENS, TokenizerParams
from components.tokenizer.train import new_tokenizer, save
from infra import serve
from infra.stack import group_alive
from tasks import tracking
from tasks.dag import Workspace
from tests.conftest import make_workspace

BIN = Path(sys.executable).parent
NAME = "tiny-chat"  # registered model
HELLO = [{"role": "user", "content": "Hello"}]
BRIEF = {"max_tokens": 8, "temperature": 0}  # a random model rarely stops by itself: bound every reply


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny chat model folder as the pipeline exports it: random weights, a BPE tokenizer trained here, ChatML."""
    text = "The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire. " * 30
    tokenizer = new_tokenizer()
    tokenizer.train_from_iterator([text], trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer_dir = tmp_path_factory.mktemp("tokenizer")
    save(tokenizer, tokenizer_dir, TokenizerParams(vocab_size=512, model_max_length=128), {})
    model = build_model(ModelParams(depth=2, aspect_ratio=32, head_dim=16, seq_len=128), 512, bos_id=0, eos_id=1,
                        pad_id=2)
    return export_hf(model, tokenizer_dir, tmp_path_factory.mktemp("model") / "tiny-chat")


@pytest.fixture(scope="module")
def registry_ws(model_dir, tmp_path_factory) -> Path:
    """A workspace whose embedded MLflow registry (SQLite) holds versions 1 and 2 of NAME, registered the way
    the training stages register theirs."""
    ws = tmp_path_factory.mktemp("ws")
    (ws / ".llm-lifecycle").mkdir()
    import mlflow

    uri, before = f"sqlite:///{ws / '.llm-lifecycle' / 'mlflow.db'}", mlflow.get_tracking_uri()  # the embedded default
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)  # an earlier test's pipeline run may have set another one in this process
        try:
            for attempt in (1, 2):
                run = tracking.RunHandle(tracking.start_run(ws, f"sft-{attempt}", {}))
                assert str(run.register_model(model_dir, NAME, {}, "tiny test model")) == str(attempt)
        finally:
            mlflow.set_tracking_uri(before)
    return ws


@pytest.fixture
def in_workspace(monkeypatch):
    """Point llm-lifecycle at a workspace, with the registry its embedded one."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def activate(ws: Path) -> Workspace:
        monkeypatch.setenv("LLM_LIFECYCLE_WORKSPACE", str(ws))
        return Workspace(ws)

    return activate


def cli(*args: str, ws: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"LLM_LIFECYCLE_WORKSPACE": str(ws)}
    return subprocess.run([str(BIN / "llm-lifecycle"), *args], env=env, cwd=ws, input=stdin, capture_output=True,
                          text=True, timeout=240)


def test_registered_versions_resolve_and_download_once(registry_ws, in_workspace, monkeypatch):
    ws = in_workspace(registry_ws)
    latest, first = serve.resolve(f"models:/{NAME}/latest", ws), serve.resolve(f"models:/{NAME}/1", ws)
    assert (latest.name, first.name) == (f"{NAME}-2", f"{NAME}-1")
    for model in (latest, first):
        folder = Path(model.source)
        assert model.local and folder.is_relative_to(ws.state_dir / "serve" / "models" / NAME)
        assert (folder / "config.json").is_file() and (folder / "chat_template.jinja").is_file()

    import mlflow.artifacts

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **_: pytest.fail("downloaded twice"))
    assert serve.resolve(f"models:/{NAME}/2", ws).source == latest.source  # from the cache
    with pytest.raises(serve.ServeError, match=re.escape(f"versions of {NAME}: [1, 2]")):
        serve.resolve(f"models:/{NAME}/7", ws)
    with pytest.raises(serve.ServeError, match="expected models:/NAME/VERSION"):
        serve.resolve(f"models:/{NAME}", ws)


def test_stage_output_folder_and_hub_id_resolve(model_dir, tmp_path, in_workspace):
    ws = in_workspace(make_workspace(tmp_path / "ws"))
    with pytest.raises(serve.ServeError, match="no config.json.*has it run"):
        serve.resolve("pretrain", ws)
    shutil.copytree(model_dir, ws.root / "data" / "pretrain")
    assert serve.resolve("pretrain", ws) == serve.Model("pretrain", "pretrain", str(ws.root / "data" / "pretrain"))
    with pytest.raises(serve.ServeError, match="no stage 'nonsense'"):
        serve.resolve("nonsense", ws)
    folder = serve.resolve(str(model_dir), ws)
    assert (folder.name, folder.source, folder.local) == ("tiny-chat", str(model_dir), True)
    hub = serve.resolve("some-org/some-model", ws)
    assert (hub.name, hub.source, hub.local) == ("some-model", "some-org/some-model", False)


def test_refuses_remote_binding_without_the_flag_and_vllm_without_vllm(model_dir, tmp_path, in_workspace):
    in_workspace(tmp_path)
    model = serve.resolve(str(model_dir), Workspace())
    with pytest.raises(serve.ServeError, match="--allow-remote"):
        serve.start(model, host="0.0.0.0")
    if not shutil.which("vllm"):
        with pytest.raises(serve.ServeError, match="pip install vllm"):
            serve.start(model, engine="vllm")
    assert not (tmp_path / ".llm-lifecycle" / "stack" / "model-servers.json").exists()  # nothing was started


@pytest.mark.serve
def test_served_registered_model_answers_the_openai_client_and_stops(registry_ws, in_workspace, monkeypatch):
    port = serve.free_port()
    up = cli("serve", f"models:/{NAME}/latest", "--port", str(port), ws=registry_ws)
    assert up.returncode == 0, up.stdout + up.stderr
    base_url, model_id = re.search(r"base_url: (\S+)", up.stdout)[1], re.search(r"model: +(\S+)", up.stdout)[1]
    server = json.loads((registry_ws / ".llm-lifecycle/stack/model-servers.json").read_text())[f"{NAME}-2"]
    try:
        assert base_url == f"http://127.0.0.1:{port}/v1" and Path(model_id).is_dir()
        from openai import OpenAI

        assert [m.id for m in OpenAI(base_url=base_url, api_key="none").models.list()] == [model_id]
        reply = chat_completion(base_url, model_id, HELLO, **BRIEF)
        assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage.completion_tokens <= BRIEF["max_tokens"]
        chunks = [c for c in chat_completion(base_url, model_id, HELLO, stream=True, **BRIEF) if c.choices]
        assert "".join(c.choices[0].delta.content or "" for c in chunks)
        assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] in (["stop"], ["length"])

        listed = cli("stack", "status", ws=registry_ws).stdout
        line = next(line for line in listed.splitlines() if line.startswith(f"{NAME}-2 "))
        assert "healthy" in line and base_url in line and model_id in line

        # chat finds the running server, and sends the whole conversation with every turn
        ws = in_workspace(registry_ws)
        with serve.server_for(serve.resolve(f"models:/{NAME}/2", ws)) as found:
            assert (found["name"], found["temporary"]) == (f"{NAME}-2", False)
        sent, real = [], openai_client.chat_completion
        monkeypatch.setattr(openai_client, "chat_completion", lambda *a, **kw: sent.append(a[2]) or real(*a, **kw))
        turns = iter(["Hello", "And then?", "/reset", "Anew", "/exit", "never read"])
        monkeypatch.setattr("builtins.input", lambda prompt="": next(turns))
        serve.converse(base_url, model_id, system="Be brief.", **BRIEF)
        assert [[m["role"] for m in messages] for messages in sent] == [
            ["system", "user"], ["system", "user", "assistant", "user"], ["system", "user"]]
    finally:
        down = cli("serve", "--stop", f"{NAME}-2", ws=registry_ws)
    assert down.stdout.strip() == f"stopped {NAME}-2", down.stdout + down.stderr
    assert not group_alive(server["pid"])
    assert f"{NAME}-2" not in cli("stack", "status", ws=registry_ws).stdout


@pytest.mark.serve
def test_chat_starts_a_server_for_itself_and_stops_it(model_dir, tmp_path):
    chatted = cli("chat", str(model_dir), "--max-tokens", "8", "--system", "Be brief.", ws=tmp_path,
                  stdin="Hello\n/reset\n")  # the end of input leaves
    assert chatted.returncode == 0, chatted.stdout + chatted.stderr
    assert "started for this chat" in chatted.stderr
    reply = chatted.stdout.split("assistant> ", 1)[1].splitlines()[0]
    assert reply.strip() and "(conversation reset)" in chatted.stdout
    assert json.loads((tmp_path / ".llm-lifecycle/stack/model-servers.json").read_text()) == {}
    assert not _serving(model_dir)


def _serving(folder: Path) -> list[int]:
    """Processes whose command line names `folder`: a model server left behind."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(folder).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found
