"""kill -9 of a training launch right after a given checkpoint: what the resume tests of every objective share."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from test_train import kill_all


def kill_after_checkpoint(proc: subprocess.Popen, ckpt: Path, tag: str = "step-8", timeout: float = 300) -> None:
    """Wait until `ckpt/latest` names `tag` (the launch must still be running), then kill the launcher and every
    rank. The launch should pause between steps (`step_pause_s`) so the kill lands before the next checkpoint."""
    deadline = time.monotonic() + timeout
    while not ((ckpt / "latest").exists() and (ckpt / "latest").read_text() == tag):
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, f"no {tag} checkpoint in time"
        time.sleep(0.02)
    kill_all(proc)
