"""Walk MLflow lineage tags upstream: from any run back to the raw sources.

A stage run carries `llm.input.<path>` and `llm.output.<path>` tags holding DVC md5s; the producer of an
input is the latest run whose output tag for that path holds the same md5. A pipeline run expands into
its stage runs.
"""
from __future__ import annotations

import json

from tasks.tracking import EXPERIMENT, TAG, client


def resolve(ref: str) -> str:
    """A run id, or a registered model version `models:/NAME/VERSION`: the run that produced it."""
    if ref.startswith("models:/"):
        name, _, version = ref.removeprefix("models:/").rpartition("/")
        if not name or not version.isdigit():
            raise ValueError(f"{ref!r}: write a model version as models:/NAME/VERSION, e.g. models:/llm-lifecycle-base/1")
        return client().get_model_version(name, version).run_id
    return ref


def trace(run_id: str) -> dict:
    run_id = resolve(run_id)
    run = client().get_run(run_id)
    tags = run.data.tags
    node = {
        "run_id": run_id,
        "name": run.info.run_name,
        "kind": tags.get(f"{TAG}kind"),
        "stage": tags.get(f"{TAG}stage"),
        "status": run.info.status,
        "git_commit": tags.get("mlflow.source.git.commit"),
        "params_digest": tags.get(f"{TAG}params_digest"),
        "prefect_flow_run": tags.get(f"{TAG}prefect.flow_run_id"),
        "outputs": _paths(tags, "output."),
        "inputs": [],
    }
    if node["kind"] == "pipeline":
        node["stages"] = [trace(r.info.run_id) for r in _search(f"tags.`mlflow.parentRunId` = '{run_id}'")]
        return node
    for path, md5 in _paths(tags, "input.").items():
        made_by = producer(path, md5) if path.startswith("data/") else None
        node["inputs"].append({"path": path, "md5": md5, "produced_by": trace(made_by) if made_by else None})
    sources = tags.get(f"{TAG}raw_sources")
    if sources:
        node["raw_sources"] = json.loads(sources)
    return node


def _paths(tags: dict, kind: str) -> dict[str, str]:
    prefix = f"{TAG}{kind}"
    return {k[len(prefix):]: v for k, v in sorted(tags.items()) if k.startswith(prefix)}


def producer(path: str, md5: str) -> str | None:
    """The latest finished stage run whose output `path` had this md5."""
    runs = _search(f"tags.`{TAG}output.{path}` = '{md5}' and attributes.status = 'FINISHED'")
    return runs[0].info.run_id if runs else None


def _search(filter_string: str):
    experiment = client().get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return client().search_runs([experiment.experiment_id], filter_string, order_by=["attributes.start_time DESC"])


def render(node: dict, indent: str = "") -> str:
    what = f"stage {node['stage']}" if node.get("stage") else node["name"]
    lines = [f"{indent}{what}  run {node['run_id']}  [{node['status']}]  commit {node['git_commit']}"
             f"  params {node['params_digest']}"]
    for path, md5 in node["outputs"].items():
        lines.append(f"{indent}  produced {path}  md5 {md5}")
    for inp in node["inputs"]:
        lines.append(f"{indent}  read {inp['path']}  md5 {inp['md5']}")
        if inp["produced_by"]:
            lines.append(render(inp["produced_by"], indent + "    "))
    for source in node.get("raw_sources", []):
        lines.append(f"{indent}  raw source {source}")
    for child in node.get("stages", []):
        lines.append(render(child, indent + "  "))
    return "\n".join(lines)
