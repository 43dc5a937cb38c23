"""Reading the params of every stage must not import torch, transformers or DeepSpeed: every flow run does it,
and a no-op rerun of the whole DAG should cost seconds, not the ≈ 5 CPU-s those imports take."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_reading_every_stages_params_imports_no_torch():
    probe = ("import sys\nfrom tasks.dag import Workspace\nimport flows.pipeline\n"
             "models = Workspace().param_models()\n"
             "print(len(models), sorted(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    count, loaded = out.stdout.strip().split(" ", 1)
    assert int(count) >= 15 and loaded == "[]", f"{loaded} imported by: {probe}"
