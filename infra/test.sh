#!/usr/bin/env bash
# The README's test command: installs everything, then runs the whole test suite (the stack test included).
set -euo pipefail
# a relative data dir means relative to where you ran this, before the cd below
[ -z "${LLM_LIFECYCLE_DATA_DIR:-}" ] || export LLM_LIFECYCLE_DATA_DIR=$(realpath "$LLM_LIFECYCLE_DATA_DIR")
cd "$(dirname "$0")/.."
bash infra/setup.sh
source infra/env.sh
export LLM_LIFECYCLE_DATA_DIR=${LLM_LIFECYCLE_DATA_DIR:-$(cd .. && pwd)/shared/data}
exec python -m pytest "$@"
