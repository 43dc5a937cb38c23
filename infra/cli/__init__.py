"""`llm-lifecycle`: run the DAG, run one stage, audit lineage, manage the local stack, serve, chat with and evaluate
models, print the report card. Each module registers its commands on the one `app` when imported (in this order:
their order in --help)."""
from infra.cli.common import app
from infra.cli import pipeline, standalone, models, arena, stack

COMMAND_MODULES = (pipeline, standalone, models, arena, stack)
__all__ = ["app"]
