"""The stage graph, read from DVC: dvc.yaml is the only place stages are declared.

Each stage `NAME` in dvc.yaml has a Python module `tasks.NAME` that says which params section it reads
(`SECTION`), its typed parameters (`Params`), the suites that gate its output (`GATES`: file pattern → suite) and its body
(`run`). Nothing else lists the stages.

A `foreach` stage in dvc.yaml is one stage per item, which DVC names `GROUP@KEY` (`evaluate@base`): each is its own
stage (its own change detection, lock entry, Prefect task and MLflow run), all run by the module `tasks.GROUP`, and the
body learns its key from `spec.item`.
"""
from __future__ import annotations

import hashlib
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
UNCHANGED = "unchanged: code, params and inputs match dvc.lock"
FOREACH_JOIN = "@"  # DVC's `GROUP@KEY`; the names dvc.yaml gives may hold no punctuation but `_` and `-`


def group_of(name: str) -> str:
    """The dvc.yaml entry a stage comes from, which names its module: `evaluate` for `evaluate@base`."""
    return name.partition(FOREACH_JOIN)[0]


@dataclass(frozen=True)
class Input:
    stage: str  # the upstream stage
    folder: str  # its output: data/pretrain, data/evaluate/base
    dep: str  # the dvc.yaml dependency that reads it: the folder itself, or one holding several (data/evaluate)


@dataclass(frozen=True)
class StageSpec:
    name: str  # as DVC names it: `evaluate@base` is the item `base` of the foreach stage `evaluate`
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...]
    sections: tuple[str, ...]  # params sections it reads
    reads: tuple[Input, ...]  # the upstream outputs it reads, by upstream stage name

    @property
    def upstream(self) -> tuple[str, ...]:
        """Stages whose outputs it reads."""
        return tuple(read.stage for read in self.reads)

    @property
    def item(self) -> str | None:
        """Its foreach key (`base` for `evaluate@base`); None for a plain stage."""
        return self.name.partition(FOREACH_JOIN)[2] or None

    @property
    def data_out(self) -> str:
        """The folder it publishes: its first output in dvc.yaml (data/<name>, data/evaluate/<item>)."""
        return self.outs[0]

    @property
    def report_dir(self) -> str:
        """Where its reports go: beside its metrics file in dvc.yaml (reports/<name>, reports/evaluate/<item>)."""
        return str(Path(self.metrics[0]).parent) if self.metrics else f"reports/{self.name}"

    def inputs(self) -> dict[str, str]:
        """Upstream stage name → the data folder of it that this stage reads."""
        return {read.stage: read.folder for read in self.reads}


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
        """Every stage, upstream before downstream, ties broken by their order in dvc.yaml (a foreach stage's
        items in the order of its foreach). Read once per process and dvc.yaml content: every task of a flow
        run makes its own Workspace, and DVC takes ~1 s to build the graph."""
        text = (self.root / "dvc.yaml").read_bytes()
        key = (self.root, hashlib.sha256(text).hexdigest())
        if key not in _STAGES:
            _STAGES[key] = self._read_stages(text)
        return _STAGES[key]

    def _read_stages(self, dvc_yaml: bytes) -> list[StageSpec]:
        declared = list((yaml.safe_load(dvc_yaml) or {}).get("stages", {}))
        with self.dvc() as repo:
            graph = repo.index.graph  # edges point from a stage to the stages it depends on
            specs = {s.name: _spec(s, graph) for s in graph.nodes if group_of(s.name) in declared}
        in_file_order = sorted(specs, key=lambda name: declared.index(group_of(name)))  # stable: items keep theirs
        return _topological(specs, rank={name: i for i, name in enumerate(in_file_order)})

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise StageError(f"no stage {name!r} in dvc.yaml; stages: {', '.join(s.name for s in self.stages)}")

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"tasks.{group_of(name)}")

    def param_models(self) -> dict:
        models = {}
        for spec in self.stages:
            module = self.module(spec.name)
            if module.SECTION not in spec.sections:
                raise StageError(f"dvc.yaml stage {spec.name!r} must list params section {module.SECTION!r}")
            models[module.SECTION] = module.Params
        return models

    def disabled(self, params: dict) -> dict[str, str]:
        """Stage → why it does not run: its params section says `enabled: false`, or a dependency it reads is made
        only by disabled stages (evaluate@dpo when dpo is off), transitively. A dependency that several stages
        fill is missing only when all of them are disabled: the report still runs on the models evaluated."""
        reasons: dict[str, str] = {}
        for spec in self.stages:  # upstream first, so an upstream's reason is known before its readers'
            section = self.module(spec.name).SECTION
            if params[section].get("enabled") is False:
                reasons[spec.name] = f"disabled ({section}.enabled: false in the parameters)"
                continue
            makers: dict[str, list[str]] = {}
            for read in spec.reads:
                makers.setdefault(read.dep, []).append(read.stage)
            missing = next((dep for dep, stages in makers.items() if all(s in reasons for s in stages)), None)
            if missing:
                first = makers[missing][0]
                reasons[spec.name] = f"disabled: reads {missing} from {first}, {reasons[first]}"
        return reasons

    def skips(self, plan: list[str], params: dict, force: bool) -> dict[str, str]:
        """Stage → why it will not run, decided for the whole plan before anything runs, with one DVC status:
        disabled, or (unless forced) unchanged while no upstream of it in the plan runs. The others are decided
        when their turn comes, after their upstreams ran (`changes`)."""
        disabled = self.disabled(params)
        reasons = {name: disabled[name] for name in plan if name in disabled}
        if force:
            return reasons
        for name in self.unchanged([n for n in plan if n not in reasons]):  # in plan order: upstream first
            if all(up in reasons for up in self.stage(name).upstream if up in plan):
                reasons[name] = UNCHANGED
        return reasons

    def unchanged(self, names: list[str]) -> list[str]:
        """Those of `names` whose code, params and inputs match dvc.lock: the stages of one DVC index, each asked
        for its status (`repo.status(targets=...)` opens the repository and collects each target anew)."""
        locked = self.lock_entries()
        known = set(name for name in names if name in locked)
        if not known:
            return []
        with self.dvc() as repo, repo.lock:  # what `repo.status` holds
            stages = {stage.name: stage for stage in repo.index.stages if stage.name in known}
            changed = {name for name, stage in stages.items() if stage.status()}
        return [name for name in names if name in stages and name not in changed]

    def changes(self, name: str) -> str | None:
        """Why DVC would rerun this stage (None when its code, params and inputs match dvc.lock)."""
        if not self.lock_entry(name):
            return "first run (no entry in dvc.lock)"
        with self.dvc() as repo:
            status = repo.status(targets=[name])
        return _describe(status.get(f"dvc.yaml:{name}") or status.get(name))

    def lock_entry(self, name: str) -> dict:
        return self.lock_entries().get(name, {})

    def lock_entries(self) -> dict[str, dict]:
        lock = self.root / "dvc.lock"
        return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}


_STAGES: dict[tuple[Path, str], list[StageSpec]] = {}  # (root, dvc.yaml digest) → its stages


def _spec(stage, graph) -> StageSpec:
    params = [p for d in stage.deps if hasattr(d, "params") for p in d.params]
    deps = tuple(str(d.def_path) for d in stage.deps if not hasattr(d, "params"))
    reads = []
    for up in sorted(graph.successors(stage), key=lambda s: s.name):
        # DVC drew the edge because a dependency is one of the upstream's outputs, or holds it, or lies in it
        folder, dep = next((str(o.def_path), d) for o in up.outs for d in deps if _overlap(d, str(o.def_path)))
        reads.append(Input(up.name, folder, dep))
    return StageSpec(
        name=stage.name,
        deps=deps,
        outs=tuple(str(o.def_path) for o in stage.outs if not o.metric),
        metrics=tuple(str(o.def_path) for o in stage.outs if o.metric),
        sections=tuple(params),
        reads=tuple(reads),
    )


def _overlap(a: str, b: str) -> bool:
    """One path is the other, or holds it."""
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


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
