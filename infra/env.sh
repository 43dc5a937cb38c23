# Sourced by the README's commands: the project's venv on PATH, telemetry off everywhere.
export PATH="$PWD/${LLM_LIFECYCLE_VENV:-.venv}/bin:$PATH"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/llm-lifecycle/torch_extensions}
