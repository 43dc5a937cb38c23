"""Fixtures shared by the tests: the shared data folder and throw-away workspaces."""
from __future__ import annotations

import os
import shutil
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tasks.tracking import RUN_WRITES

REPO = Path(__file__).resolve().parents[1]

for _var, _value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                     "MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_var, _value)


# An isoFLOP grid that recommends a size on the tiny preset's shards: two budgets with an interior minimum and a loss
# law with positive exponents (benchmarks/RESULTS.md, "Scaling laws": 6e11 and 1.2e12 FLOPs, depths 1-3); three
# sizes are too few to bootstrap, so none. Refusals are tested on synthetic points (tests/unit/test_scaling.py).
RECOMMENDING_SWEEP = {"budgets": [6e11, 1.2e12], "depths": [1, 2, 3], "bootstrap": 0, "target_flops": 1.2e12}
DATA_FOLDERS = ("crawl", "curated", "eval", "pii", "preference", "sft")  # what the tests read from the shared data


def pytest_sessionstart(session):
    """The README's test command (infra/test.sh) names the data folder: if it is absent, stop the whole run loudly
    rather than go green with every test that reads it skipped. A bare `pytest` without the variable still skips."""
    named = os.environ.get("LLM_LIFECYCLE_DATA_DIR")
    missing = [f for f in DATA_FOLDERS if not (Path(named) / f).is_dir()] if named else []
    if missing:
        pytest.exit(f"LLM_LIFECYCLE_DATA_DIR={named} lacks {', '.join(missing)}: put the shared data there (see "
                    f"its README.md) or point LLM_LIFECYCLE_DATA_DIR at it", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
    if not (path / "crawl").is_dir():
        pytest.skip(f"shared data not found at {path} (set LLM_LIFECYCLE_DATA_DIR)")
    return path


def make_workspace(target: Path) -> Path:
    """A fresh checkout of the project's tracked files in `target`, as its own git repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        # a fresh workspace has built nothing yet: no lock, no metrics from a run in this checkout
        if (REPO / name).is_file() and not any(fnmatch(name, written) for written in RUN_WRITES):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=target, check=True)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True)
    subprocess.run([*git, "commit", "-qm", "workspace"], cwd=target, check=True)
    return target


@pytest.fixture
def workspace_env(monkeypatch, data_dir, tmp_path_factory):
    """Point llm-lifecycle at a fresh workspace with embedded MLflow and a local DVC remote."""

    def activate(ws: Path) -> Path:
        state = tmp_path_factory.mktemp("state")
        monkeypatch.setenv("LLM_LIFECYCLE_WORKSPACE", str(ws))
        monkeypatch.setenv("LLM_LIFECYCLE_DATA_DIR", str(data_dir))
        monkeypatch.setenv("LLM_LIFECYCLE_DVC_REMOTE", str(state / "dvc-remote"))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{state / 'mlflow.db'}")
        monkeypatch.chdir(ws)
        return ws

    return activate
