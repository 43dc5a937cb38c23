#!/usr/bin/env bash
# The README's main command: installs everything, starts the local stack (Prefect server + worker, MLflow
# server; LLM_LIFECYCLE_S3=1 adds the loopback S3 server), and runs the whole tiny lifecycle as the
# `llm-lifecycle/full` deployment on the worker. The stack stays up so you can look; `llm-lifecycle stack down`.
set -euo pipefail
# a relative data dir means relative to where you ran this, before the cd below
[ -z "${LLM_LIFECYCLE_DATA_DIR:-}" ] || export LLM_LIFECYCLE_DATA_DIR=$(realpath "$LLM_LIFECYCLE_DATA_DIR")
cd "$(dirname "$0")/.."
bash infra/setup.sh
source infra/env.sh
llm-lifecycle stack up ${LLM_LIFECYCLE_S3:+--s3}
eval "$(llm-lifecycle stack env)"
watched=$(mktemp)
if ! prefect deployment run llm-lifecycle/full --watch 2>&1 | tee "$watched"; then
  # the watch says only "Failed": say which stage, its error, where its log is, and what to do
  flow_run=$(grep -oE 'UUID: [0-9a-f-]{36}' "$watched" | head -n 1 | cut -d' ' -f2 || true)
  echo
  llm-lifecycle why $flow_run >&2 || true
  echo "The stack is still up: Prefect UI $PREFECT_UI_URL; stop it with: .venv/bin/llm-lifecycle stack down" >&2
  exit 1
fi
cat <<MSG

Done. Where to look:
  Prefect UI (flow runs, the pipeline-summary artifact): $PREFECT_UI_URL
  MLflow UI (experiment llm-lifecycle, one run per stage): $MLFLOW_TRACKING_URI
  Run summary here: eval "\$(.venv/bin/llm-lifecycle stack env)"; .venv/bin/prefect artifact inspect pipeline-summary
  Lineage of a run: .venv/bin/llm-lifecycle lineage RUN_ID   (with MLFLOW_TRACKING_URI from 'stack env')
  Stop the stack:   .venv/bin/llm-lifecycle stack down
MSG
