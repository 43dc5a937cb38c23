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
        "dirty_files": tags.get(f"{TAG}git.dirty_files", "").split(),  # what differed from that commit
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
    if node["dirty_files"]:
        lines.append(f"{indent}  differed from the commit: {' '.join(node['dirty_files'])}")
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


# --- takedown: everything that descends from the records of one URL ---

def contains(ws, url: str) -> dict:
    """What descends from the records of `url` (a URL or a URL prefix; the scheme is ignored): the stage outputs
    that hold such records and every output downstream of them in dvc.yaml's DAG (a token shard cannot say
    which URL it holds, so reading them is enough), the MLflow runs that recorded those outputs' DVC md5s, and
    the registered model versions those runs made. Records the clean stage removed are listed as audits."""
    prefix = _comparable(url)
    found = {spec.name: _records_of(ws.root / spec.data_out, prefix) for spec in ws.stages}
    holders = {name for name, hit in found.items() if hit["records"]}
    affected, names = [], set()
    for spec in ws.stages:  # upstream first, so an upstream's verdict is known before its readers'
        if spec.name in holders or names.intersection(spec.upstream):
            affected.append(spec)
            names.add(spec.name)
    outputs = [{"stage": spec.name, "path": out["path"], "md5": out.get("md5"), "built": (ws.root / out["path"]).exists()}
               for spec in affected  # a stage DVC has not built here: its output folder, with no md5
               for out in ws.lock_entry(spec.name).get("outs") or [{"path": spec.data_out}]]
    runs = _runs_recording({o["path"]: o["md5"] for o in outputs if o["md5"]})
    return {
        "url": url,
        "found": {name: hit for name, hit in found.items() if hit["records"] or hit["removed"]},
        "outputs": outputs,
        "runs": runs,
        "model_versions": sorted({r["registered_model"] for r in runs if r["registered_model"]}),
        "rebuild": _rebuild_advice(url, holders),
    }


def _comparable(url: str) -> str:
    from components.clean.urlfilter import without_scheme

    return without_scheme(url.strip().lower())


def _records_of(folder, prefix: str) -> dict:
    """Rows of every Parquet file under `folder` whose `url` starts with `prefix`: records it holds, and
    removal audits (removed/*.parquet: step and rule of each removed document)."""
    import pyarrow.parquet as pq

    from components.clean.urlfilter import without_scheme

    hit = {"records": 0, "files": [], "removed": {}}
    for path in sorted(folder.rglob("*.parquet")) if folder.is_dir() else []:
        names = pq.read_schema(path).names
        if "url" not in names:
            continue
        audit = "removed" in path.relative_to(folder).parts[:-1]
        table = pq.read_table(path, columns=["url", *(["step", "rule"] if audit else [])]).to_pandas()
        rows = table[table["url"].fillna("").map(lambda u: without_scheme(u.lower()).startswith(prefix))]
        if rows.empty:
            continue
        if audit:
            for (step, rule), n in rows.groupby(["step", "rule"]).size().items():
                hit["removed"][f"{step}/{rule}"] = hit["removed"].get(f"{step}/{rule}", 0) + int(n)
        else:
            hit["records"] += len(rows)
            hit["files"].append(str(path.relative_to(folder)))
    return hit


def _runs_recording(digests: dict[str, str]) -> list[dict]:
    """Finished or failed runs whose lineage tags hold one of these (path → md5): their producers and readers."""
    seen: dict[str, dict] = {}
    for path, md5 in digests.items():
        for kind in ("input", "output"):
            for run in _search(f"tags.`{TAG}{kind}.{path}` = '{md5}'"):
                tags = run.data.tags
                entry = seen.setdefault(run.info.run_id, {
                    "run_id": run.info.run_id, "name": run.info.run_name, "stage": tags.get(f"{TAG}stage"),
                    "status": run.info.status, "registered_model": tags.get(f"{TAG}registered_model"),
                    "metrics": sorted(run.data.metrics), "recorded": []})
                entry["recorded"].append(f"{kind} {path}")
    return sorted(seen.values(), key=lambda r: (r["stage"] or "", r["run_id"]))


def _rebuild_advice(url: str, holders: set[str]) -> str:
    if not holders:
        return "no stage output holds records of this URL: nothing to rebuild"
    return (f"add {url!r} to clean.url.blocklist in params.yaml (`clean: {{url: {{blocklist: [...]}}}}`, or one line of "
            "the file clean.url.blocklist_file; a URL entry drops every page whose URL contains it, a bare domain "
            "drops the site), then `llm-lifecycle run`: DVC sees the changed clean parameters and rebuilds clean "
            "and every stage after it. The raw records stay in data/ingest and its crawl source files until "
            "those are replaced; delete the model versions and runs listed here (MLflow) and run `dvc gc -w -c` "
            "to drop the old outputs from the DVC cache and remote")


def render_contains(report: dict) -> str:
    lines = [f"records of {report['url']} (a URL prefix; the scheme ignored):"]
    for stage, hit in report["found"].items():
        if hit["records"]:
            lines.append(f"  {stage}: {hit['records']} record(s) in {', '.join(hit['files'])}")
        for rule, n in hit["removed"].items():
            lines.append(f"  {stage}: {n} removed ({rule}), in its removed/ audit")
    if not report["found"]:
        lines.append("  none in this workspace's stage outputs (`dvc pull` fetches outputs built elsewhere)")
    lines.append("stage outputs that descend from them (the stages holding them and every stage downstream):")
    for o in report["outputs"]:
        lines.append(f"  {o['path']}  md5 {o['md5']}  ({o['stage']}{'' if o['built'] else ', not built here'})")
    lines.append("MLflow runs that recorded those outputs (their metrics and scores descend too):"
                 + ("" if report["runs"] else " none in this tracking store"))
    for r in report["runs"]:
        model = f"  registered {r['registered_model']}" if r["registered_model"] else ""
        lines.append(f"  {r['stage'] or r['name']}  run {r['run_id']}  [{r['status']}]  {len(r['metrics'])} metrics{model}")
    lines.append("registered model versions: " + (", ".join(f"models:/{v}" for v in report["model_versions"]) or "none"))
    lines.append(f"to rebuild without them: {report['rebuild']}")
    return "\n".join(lines)
