"""The scaling-law sweep as a Prefect flow: current token shards, an isoFLOP grid of pretraining runs, the
fitted laws, and the recommended size for `--preset scaled`.

Its flow name is the product's, so its deployment is `llm-lifecycle/scaling` beside `llm-lifecycle/full`.
"""
from __future__ import annotations

from itertools import groupby
from typing import Any

from prefect import flow

from flows.pipeline import llm_lifecycle
from tasks.dag import Workspace
from tasks.scaling import (close_sweep, fit_sweep, open_sweep, require_shards, sweep_points, train_budget,
                           upstream_of)


@flow(name="llm-lifecycle", flow_run_name="scaling-{preset}")
def llm_lifecycle_scaling(
    preset: str = "tiny",
    overrides: dict[str, Any] | None = None,
    sweep: dict[str, Any] | None = None,
    lock_wait_s: float = 0,
) -> dict:
    """Train an isoFLOP sweep with the pretraining stage's code, fit the scaling laws, recommend a size.

    Args:
        preset: the preset whose pretrain settings every point uses (and the recommendation overlays).
        overrides: parameter overrides, as for the pipeline.
        sweep: the grid, e.g. {"budgets": [5e11, 1e12, 2e12], "depths": [2, 3, 4, 6], "target_flops": 1e14}.
        lock_wait_s: how long to wait for another run on the same workspace to finish.
    """
    ws = Workspace()
    llm_lifecycle(preset=preset, overrides=overrides, stages=upstream_of(ws, "pretrain"), push=False,
                  lock_wait_s=lock_wait_s)  # the shards the sweep trains on are current
    lock, settings, base, run_id = open_sweep(ws, preset, overrides or {}, sweep or {}, lock_wait_s)
    ok = False
    try:
        points = sweep_points(settings, base, require_shards(ws))
        trained = []
        for budget, group in groupby(points, key=lambda p: p["budget"]):
            trained += train_budget(budget, list(group), settings, base, run_id)
        result = fit_sweep(trained, settings, base, preset, run_id)
        ok = True
    finally:
        close_sweep(lock, run_id, ok)
    return result
