"""The lifecycle DAG as one Prefect flow; its stages and their order come from dvc.yaml."""
from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.dag import Workspace
from tasks.orchestrate import close_session, failed_outcome, open_session, push_outputs, run_stage


@flow(name="llm-lifecycle")
def llm_lifecycle(
    preset: str = "tiny",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    push: bool = True,
    lock_wait_s: float = 0,
) -> list[dict]:
    """Run the lifecycle DAG; stages whose code, params and inputs are unchanged are skipped.

    Args:
        preset: a preset from params.yaml (tiny, gpu, multi-node).
        overrides: parameter overrides, e.g. {"crawl.max_records": 50}.
        stages: run only these stages (their upstream outputs are reused); all when empty.
        force: rerun the selected stages even if unchanged.
        push: push the outputs to the DVC remote after a successful run.
        lock_wait_s: how long to wait for another run on the same workspace to finish.
    """
    session = open_session(Workspace(), preset, overrides or {}, lock_wait_s)
    failed = None
    try:
        plan = session.plan(stages)
        skips = session.ws.skips(plan, session.params, force)  # one DVC status for every stage known not to run
        for name in plan:
            state = run_stage(name, force, session.run_id, session.params, skip=skips.get(name), return_state=True)
            outcome = state.result(raise_on_failure=False)
            if isinstance(outcome, BaseException):
                session.outcomes.append(failed_outcome(name, outcome))
                raise outcome
            session.outcomes.append(outcome)
        if push:
            push_outputs(session.ws)
    except BaseException as err:
        failed = err
        raise
    finally:
        close_session(session, failed)
    return session.outcomes
