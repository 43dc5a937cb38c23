"""The stage graph, read from DVC: dvc.yaml is the only place stages are declared.

Each stage `NAME` in dvc.yaml has a Python module `tasks.NAME` that says which params section it reads
(`SECTION`), its typed parameters (`Params`), the suites that gate its output (`GATES`: file pattern → suite) and its body
(`run`). Nothing else lists the stages.
"""
from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType

import networkx as nx
import yaml

WORKSPACE_ENV = "LLM_LIFECYCLE_WORKSPACE"


@dataclass(frozen=True)
class StageSpec:
    name: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...]
    sections: tuple[str, ...]  # params sections it reads
    upstream: tuple[str, ...]  # stages whose outputs it reads

    @property
    def data_out(self) -> str:
        return f"data/{self.name}"

    def inputs(self) -> dict[str, str]:
        """Upstream stage name → the data folder of it that this stage reads."""
        return {up: f"data/{up}" for up in self.upstream}


class StageError(RuntimeError):
    pass


class Workspace:
    """A checkout with dvc.yaml, params.yaml and .dvc/: where stages run and outputs live."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root or os.environ.get(WORKSPACE_ENV) or _find_root()).resolve()
        self.params_file = self.root / "params.yaml"
        self.state_dir = self.root / ".llm-lifecycle"

    @contextmanager
    def dvc(self):
        from dvc.repo import Repo

        with Repo(str(self.root)) as repo:
            yield repo

    @cached_property
    def stages(self) -> list[StageSpec]:
        """Every stage, upstream before downstream, ties broken by their order in dvc.yaml."""
        declared = list((yaml.safe_load((self.root / "dvc.yaml").read_text()) or {}).get("stages", {}))
        with self.dvc() as repo:
            graph = repo.index.graph  # edges point from a stage to the stages it depends on
            specs = {s.name: _spec(s, graph) for s in graph.nodes if s.name in declared}
        return _topological(specs, rank={name: i for i, name in enumerate(declared)})

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise StageError(f"no stage {name!r} in dvc.yaml; stages: {', '.join(s.name for s in self.stages)}")

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"tasks.{name}")

    def param_models(self) -> dict:
        models = {}
        for spec in self.stages:
            module = self.module(spec.name)
            if module.SECTION not in spec.sections:
                raise StageError(f"dvc.yaml stage {spec.name!r} must list params section {module.SECTION!r}")
            models[module.SECTION] = module.Params
        return models

    def changes(self, name: str) -> str | None:
        """Why DVC would rerun this stage (None when its code, params and inputs match dvc.lock)."""
        if not self.lock_entry(name):
            return "first run (no entry in dvc.lock)"
        with self.dvc() as repo:
            status = repo.status(targets=[name])
        return _describe(status.get(f"dvc.yaml:{name}") or status.get(name))

    def lock_entry(self, name: str) -> dict:
        lock = self.root / "dvc.lock"
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
        return stages.get(name, {})


def _spec(stage, graph) -> StageSpec:
    params = [p for d in stage.deps if hasattr(d, "params") for p in d.params]
    return StageSpec(
        name=stage.name,
        deps=tuple(str(d.def_path) for d in stage.deps if not hasattr(d, "params")),
        outs=tuple(str(o.def_path) for o in stage.outs if not o.metric),
        metrics=tuple(str(o.def_path) for o in stage.outs if o.metric),
        sections=tuple(params),
        upstream=tuple(sorted(up.name for up in graph.successors(stage))),
    )


def _topological(specs: dict[str, StageSpec], rank: dict[str, int]) -> list[StageSpec]:
    graph = nx.DiGraph()
    graph.add_nodes_from(specs)
    graph.add_edges_from((up, s.name) for s in specs.values() for up in s.upstream)
    return [specs[n] for n in nx.lexicographical_topological_sort(graph, key=lambda n: rank.get(n, 1 << 30))]


def _describe(status: list | None) -> str | None:
    if not status:
        return None
    reasons = []
    for item in status:
        if isinstance(item, str):
            reasons.append(item)
            continue
        for kind, changed in item.items():
            what = ", ".join(f"{path} ({state})" for path, state in _flatten(changed))
            reasons.append(f"{kind}: {what}")
    return "; ".join(reasons)


def _flatten(changed):
    for path, state in changed.items():
        if isinstance(state, dict):  # params file → {param: state}
            yield from ((f"{path}:{k}", v) for k, v in state.items())
        else:
            yield path, state


def _find_root() -> Path:
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    raise StageError(f"no dvc.yaml in {here} or above: run inside an llm-lifecycle checkout or set {WORKSPACE_ENV}")
