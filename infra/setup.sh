#!/usr/bin/env bash
# Creates .venv and installs the project with its pinned dependencies.
# Safe to run twice: it reinstalls only when pyproject.toml or infra/constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${LLM_LIFECYCLE_VENV:-.venv}
python=$(command -v python3.11 || command -v python3)
stamp="$venv/.installed-$(cat pyproject.toml infra/constraints.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch first and pinned: anything that pulls torch later must find it satisfied, or pip fetches a CUDA build.
"$venv/bin/python" -m pip install --quiet torch==2.13.0
"$venv/bin/python" -m pip install --quiet -c infra/constraints.txt -e ".[dev]"
rm -f "$venv"/.installed-*
touch "$stamp"
echo "installed into $venv"
