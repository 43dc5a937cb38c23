"""Fault injection on real runs: one scratch workspace per session, built by `dvc repro` up to the stages the
tests need (DVC skips what is built), and copied for each test so a fault in one cannot leak into another."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.storage import file_md5
from tests.conftest import make_workspace

BIN = Path(sys.executable).parent
STAGE_TIMEOUT_S = 3600  # a tiny stage takes seconds to ~2 minutes on a quiet 2-core machine, 10+ under a load of 30
# The tests that build a workspace are heavy: the build alone is minutes (ingest + curate ≈ 1-2 min quiet, 25 min
# at a load of 30), past the default run's budget; their timeout covers that build, which the first test pays.
WORKSPACE_TESTS = [pytest.mark.heavy, pytest.mark.timeout(4 * STAGE_TIMEOUT_S)]


def env(data_dir: Path) -> dict:
    """What a user's shell has: this venv first, the shared data, no workspace named (each command runs in one)."""
    values = {k: v for k, v in os.environ.items() if k != "LLM_LIFECYCLE_WORKSPACE"}
    return values | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "LLM_LIFECYCLE_DATA_DIR": str(data_dir)}


class Scratch:
    """A workspace and the commands a user would type in it."""

    def __init__(self, root: Path, data_dir: Path):
        self.root, self.data_dir = root, data_dir

    def sh(self, *cmd: str, check: bool = True, timeout: float = STAGE_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run a command in its own process group; a timeout or an interrupted test kills the whole group (DVC and
        the stage under it), so no stage outlives its test."""
        child = subprocess.Popen(cmd, cwd=self.root, env=env(self.data_dir), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = child.communicate(timeout=timeout)
        except BaseException:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        proc = subprocess.CompletedProcess(cmd, child.returncode, out, err)
        if check and proc.returncode:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return proc

    def params(self, *assignments: str) -> None:
        """`llm-lifecycle params --set …`: the effective parameters (tiny) and the raw sources' digests."""
        self.sh(f"{BIN}/llm-lifecycle", "params", *[a for kv in assignments for a in ("--set", kv)])

    def repro(self, *args: str, check: bool = True) -> tuple[list[str], subprocess.CompletedProcess]:
        """`dvc repro ARGS`; the stages that ran, in order."""
        proc = self.sh(f"{BIN}/dvc", "repro", *args, check=check)
        return re.findall(r"Running stage '([^']+)'", proc.stdout), proc

    def start(self, *args: str) -> subprocess.Popen:
        """`dvc repro ARGS` in its own process group, so a kill reaches the stage process under it too."""
        return subprocess.Popen([f"{BIN}/dvc", "repro", *args], cwd=self.root, env=env(self.data_dir),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def changed(self, *stages: str) -> dict:
        """`dvc status --json`: stage → what DVC sees changed (stages that match dvc.lock are left out)."""
        return json.loads(self.sh(f"{BIN}/dvc", "status", "--json", *stages).stdout or "{}")

    def snapshot(self, folder: str) -> dict[str, str]:
        """Every file of a folder → its md5."""
        root = self.root / folder
        return {p.relative_to(root).as_posix(): file_md5(p) for p in sorted(root.rglob("*")) if p.is_file()}


def kill_when_writing(proc: subprocess.Popen, out: Path, timeout: float = STAGE_TIMEOUT_S) -> float:
    """SIGKILL the process group as soon as the stage's staging folder beside `out` holds a file: a kill mid-write.
    Returns the seconds it ran."""
    started, deadline = time.monotonic(), time.monotonic() + timeout
    while not any(p.is_file() for staging in out.parent.glob(f".staging-{out.name}-*") for p in staging.rglob("*")):
        assert proc.poll() is None, f"the run ended before it wrote anything:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no file in a staging folder of {out} after {timeout} s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return time.monotonic() - started


@pytest.fixture(scope="session")
def faults_data_dir(tmp_path_factory, data_dir) -> Path:
    """The shared data seen through links, with crawl/ a folder of links to its WARCs, so a test can put another
    file at a WARC's path (and put the link back) without touching the shared data."""
    root = tmp_path_factory.mktemp("data")
    for entry in data_dir.iterdir():
        (root / entry.name).symlink_to(entry)
    (root / "crawl").unlink()
    (root / "crawl").mkdir()
    for warc in (data_dir / "crawl").iterdir():
        (root / "crawl" / warc.name).symlink_to(warc)
    return root


@pytest.fixture(scope="session")
def built_workspace(tmp_path_factory, faults_data_dir):
    """`built_workspace("ingest", "curate")`: the session's workspace (tiny preset), with `dvc repro STAGE` run for
    each stage named (DVC skips what is built)."""
    scratch = Scratch(make_workspace(tmp_path_factory.mktemp("faults") / "ws"), faults_data_dir)
    scratch.params()

    def up_to(*stages: str) -> Scratch:
        for stage in stages:
            scratch.repro(stage)
        return scratch

    return up_to


# what every workspace test builds first (≈ 1 minute quiet): the cheap stages, which are also clean's two inputs, so a
# clean that stops at its input check can be shown without building clean
CHEAP = ("ingest", "curate")


@pytest.fixture
def copy_of(built_workspace, tmp_path):
    """`copy_of("clean")`: a private copy of the session's workspace built up to `clean`."""

    def copy(*stages: str) -> Scratch:
        source = built_workspace(*stages)
        return Scratch(Path(shutil.copytree(source.root, tmp_path / "ws", symlinks=True)), source.data_dir)

    return copy
