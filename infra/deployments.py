"""Register the Prefect deployments: `llm-lifecycle/full`, `llm-lifecycle/<stage>` for every stage in
dvc.yaml, which reruns that stage (forced) and reuses the current upstream outputs, and
`llm-lifecycle/scaling`, the scaling-law sweep; and the automation that marks a flow run Crashed when its
heartbeats stop (its worker or process was killed), so no run shows Running forever.

Run with PREFECT_API_URL pointing at the server: `python -m infra.deployments` (`stack up` does it)."""
from __future__ import annotations

from datetime import timedelta

from flows.pipeline import llm_lifecycle
from flows.scaling import llm_lifecycle_scaling
from infra.stack import HEARTBEAT_S, POOL
from tasks.dag import Workspace


def register(ws: Workspace, pool: str = POOL) -> list[str]:
    # The worker runs flows from this checkout: code, dvc.yaml and outputs all live in the workspace.
    flow = llm_lifecycle.from_source(source=str(ws.root), entrypoint="flows/pipeline.py:llm_lifecycle")
    deployments = {"full": ({}, "The whole lifecycle; stages whose code, params and inputs are unchanged are skipped.")}
    for spec in ws.stages:
        deployments[spec.name] = ({"stages": [spec.name], "force": True},
                                  f"Rerun stage {spec.name} (forced), reusing the current upstream outputs.")
    for name, (parameters, description) in deployments.items():
        flow.deploy(name=name, work_pool_name=pool, parameters=parameters, description=description,
                    build=False, push=False, print_next_steps=False)
    sweep = llm_lifecycle_scaling.from_source(source=str(ws.root), entrypoint="flows/scaling.py:llm_lifecycle_scaling")
    sweep.deploy(name="scaling", work_pool_name=pool, build=False, push=False, print_next_steps=False,
                 description="isoFLOP sweep with the pretraining code, fitted scaling laws, recommended size "
                             "(params.scaling.yaml, --preset scaled).")
    return [f"llm-lifecycle/{name}" for name in [*deployments, "scaling"]]


# A run that misses three heartbeats in a row is taken for dead.
ZOMBIE_AFTER_S = 3 * HEARTBEAT_S
CRASH_AUTOMATION = "llm-lifecycle: crash flow runs whose heartbeats stopped"


def ensure_crash_detection() -> str:
    """Prefect's own zombie detection (docs: "detect zombie flows"): a proactive trigger per flow run that
    expects a heartbeat or a final state within ZOMBIE_AFTER_S of each heartbeat, else sets the run Crashed."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        return f"automation {Automation.read(name=CRASH_AUTOMATION).name!r} (exists)"
    except ValueError:  # not found
        pass
    final = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}
    Automation(
        name=CRASH_AUTOMATION,
        trigger=EventTrigger(after={"prefect.flow-run.heartbeat"}, expect={"prefect.flow-run.heartbeat", *final},
                             match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
                             for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                             within=timedelta(seconds=ZOMBIE_AFTER_S)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=(
            f"no heartbeat for {ZOMBIE_AFTER_S} s: its worker or process died. Rerun the deployment: stages that "
            "completed are skipped"))],
    ).create()
    return f"automation {CRASH_AUTOMATION!r}"


if __name__ == "__main__":
    for deployment in register(Workspace()):
        print(deployment)
    print(ensure_crash_detection())
