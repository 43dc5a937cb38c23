"""Register the Prefect deployments: `llm-lifecycle/full`, `llm-lifecycle/<stage>` for every stage in
dvc.yaml, which reruns that stage (forced) and reuses the current upstream outputs, and
`llm-lifecycle/scaling`, the scaling-law sweep.

Run with PREFECT_API_URL pointing at the server: `python -m infra.deployments` (`stack up` does it)."""
from __future__ import annotations

from flows.pipeline import llm_lifecycle
from flows.scaling import llm_lifecycle_scaling
from infra.stack import POOL
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


if __name__ == "__main__":
    for deployment in register(Workspace()):
        print(deployment)
