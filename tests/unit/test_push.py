"""push_outputs: a remote that is away is retried with exponential backoff, then fails with what to do."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import orchestrate
from tasks.dag import StageError, Workspace

DVC = str(Path(sys.executable).parent / "dvc")


def dvc_repo(root: Path, remote_config: str) -> Workspace:
    """A git+DVC repository with one tracked file and `remote_config` as its .dvc/config (written, not set with
    `dvc remote`: each DVC process spends seconds importing DVC)."""
    root.mkdir()
    (root / "a.txt").write_text("hello\n")
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"], [DVC, "add", "-q", "a.txt"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True, timeout=120)
    (root / ".dvc" / "config").write_text(remote_config)
    return Workspace(root)


class Retried(logging.Handler):
    """Collects push_outputs' retry warnings; `then` runs at each, while push_outputs waits."""

    def __init__(self, then=lambda: None):
        super().__init__(logging.WARNING)
        self.messages, self.then = [], then

    def emit(self, record):
        self.messages.append(record.getMessage())
        self.then()


@pytest.fixture
def retried():
    handler = Retried()
    logging.getLogger(orchestrate.__name__).addHandler(handler)
    yield handler
    logging.getLogger(orchestrate.__name__).removeHandler(handler)


def test_an_unreachable_s3_remote_is_retried_with_backoff_then_fails_saying_what_to_do(
        tmp_path, monkeypatch, retried):
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there, so connections are refused at once
    ws = dvc_repo(tmp_path / "ws", f"""[core]\n    remote = s3\n['remote "s3"']\n    url = s3://bucket/dvc
    endpointurl = {closed}\n    access_key_id = testing\n    secret_access_key = testing\n""")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries would take 28 s per attempt
    monkeypatch.setenv(orchestrate.PUSH_ATTEMPTS_ENV, "3")
    monkeypatch.setenv(orchestrate.PUSH_BACKOFF_ENV, "0.05")
    with pytest.raises(StageError) as failed:
        orchestrate.push_outputs(ws)
    assert [(m.split(" failed")[0], m.split("; ")[-1]) for m in retried.messages] == [  # none after the last
        ("dvc push to remote 's3', attempt 1/3", "retrying in 0.05 s"),
        ("dvc push to remote 's3', attempt 2/3", "retrying in 0.1 s")]
    message = str(failed.value)
    for part in ("remote 's3' (s3://bucket/dvc at http://127.0.0.1:9) failed 3 times", "Could not connect",
                 "local outputs, the DVC cache and dvc.lock are intact", "`llm-lifecycle stack up --s3`",
                 "run `dvc push`"):
        assert part in message, f"{part!r} missing from: {message}"


def test_a_push_that_fails_once_completes_on_the_next_attempt(tmp_path, monkeypatch, retried):
    remote = tmp_path / "remote"
    remote.write_text("a file where the remote folder belongs: the first push fails")
    retried.then = remote.unlink  # while push_outputs waits to retry, the remote comes back
    ws = dvc_repo(tmp_path / "ws", f"""[core]\n    remote = local\n['remote "local"']\n    url = {remote}\n""")
    monkeypatch.setenv(orchestrate.PUSH_BACKOFF_ENV, "0.05")
    assert orchestrate.push_outputs(ws) == "1 files pushed"
    assert len(retried.messages) == 1 and "attempt 1/4 failed" in retried.messages[0]
    assert [p.name for p in (remote / "files" / "md5").rglob("*") if p.is_file()] == ["946ac92492d2347c6235b4d2611184"]
