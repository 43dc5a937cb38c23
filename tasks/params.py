"""Load, validate and resolve the pipeline's parameters.

params.yaml holds the base values (the `tiny` preset) in one section per stage, and named overlays under
`presets:`. A run's effective parameters are base ⊕ preset ⊕ overrides (`--set a.b=c`, or a Prefect
deployment's `overrides`), validated against each stage's typed model, and written to
`params.effective.yaml`, the file DVC tracks: so a preset or an override that changes a stage's values
reruns exactly the stages that read them, and dvc.lock records the values each output was built from.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tasks.dag import Workspace

EFFECTIVE_FILE = "params.effective.yaml"
# Written by `llm-lifecycle scaling`: the fitted model size and token count as an overlay on the preset the
# sweep ran with, applied by `--preset scaled`.
SCALED_FILE = "params.scaling.yaml"
SCALED = "scaled"
DATA_DIR_ENV = "LLM_LIFECYCLE_DATA_DIR"


class ParamsError(ValueError):
    """A parameter is wrong. The message names the key path and what is allowed."""


def parse_overrides(assignments: list[str] | dict[str, Any]) -> dict[str, Any]:
    """`["crawl.max_records=50"]` or `{"crawl.max_records": "50"}` → {"crawl.max_records": 50}.

    Values are YAML scalars, so `50` is an int, `true` a bool, `null` None and `[a, b]` a list."""
    pairs = assignments.items() if isinstance(assignments, dict) else (_split(a) for a in assignments)
    return {key: yaml.safe_load(value) if isinstance(value, str) else value for key, value in pairs}


def _split(assignment: str) -> tuple[str, str]:
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ParamsError(f"override {assignment!r} is not KEY=VALUE (e.g. crawl.max_records=50)")
    return key.strip(), value


def resolve(ws: Workspace, preset: str | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """The effective, validated parameters of every stage, as plain data."""
    try:
        raw = yaml.safe_load(ws.params_file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{ws.params_file.name} is not valid YAML: {err}") from None
    presets = raw.pop("presets", None) or {}
    preset = preset or raw.pop("preset", None) or "tiny"
    raw.pop("preset", None)
    if preset == SCALED:
        based_on, scaled = _scaled_overlay(ws)
        values = _merge(_merge(raw, presets.get(based_on) or {}), scaled)
    elif preset != "tiny" and preset not in presets:
        allowed = ", ".join(dict.fromkeys(["tiny", *presets, SCALED]))
        raise ParamsError(f"preset {preset!r} is not defined; allowed: {allowed}")
    else:
        values = _merge(raw, presets.get(preset) or {})
    for key, value in (overrides or {}).items():
        _assign(values, key, value)
    return {"preset": preset, **validate(ws, values)}


def _scaled_overlay(ws: Workspace) -> tuple[str, dict]:
    path = ws.root / SCALED_FILE
    if not path.exists():
        raise ParamsError(f"preset {SCALED!r} reads {SCALED_FILE}, which does not exist: run `llm-lifecycle scaling` "
                          "(or the llm-lifecycle/scaling deployment) first")
    overlay = yaml.safe_load(path.read_text()) or {}
    return overlay.pop("based_on", "tiny"), overlay


def validate(ws: Workspace, values: dict) -> dict:
    """Check every section against its stage's model; return the values with defaults filled in."""
    models = ws.param_models()
    unknown = sorted(set(values) - set(models))
    if unknown:
        raise ParamsError(f"unknown section(s) {', '.join(unknown)}; allowed: {', '.join(sorted(models))}")
    data_dir = Path(os.environ[DATA_DIR_ENV]).resolve() if os.environ.get(DATA_DIR_ENV) else None
    checked = {}
    for section, model in models.items():
        if section not in values:
            raise ParamsError(f"section {section!r} is missing from {ws.params_file.name}")
        parsed = _parse(model, section, values[section])
        if hasattr(parsed, "for_data_dir"):
            parsed = parsed.for_data_dir(data_dir)
        checked[section] = parsed.model_dump(mode="json")
    return checked


def _parse(model: type[BaseModel], section: str, value: Any) -> BaseModel:
    try:
        return model.model_validate(value)
    except ValidationError as err:
        problems = [
            f"{'.'.join(str(p) for p in (section, *e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        ]
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(problems)) from None


def write_effective(ws: Workspace, params: dict) -> Path:
    """Write the effective parameters where DVC reads them; untouched when unchanged (no mtime churn)."""
    path = ws.root / EFFECTIVE_FILE
    text = (
        "# Written by llm-lifecycle from params.yaml (preset + overrides) before every run.\n"
        "# DVC tracks these values; edit params.yaml, not this file.\n"
        + yaml.safe_dump(params, sort_keys=False)
    )
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def load_effective(ws: Workspace, section: str) -> BaseModel:
    """A stage's parameters as its typed model, from the file DVC tracked for this run."""
    path = ws.root / EFFECTIVE_FILE
    if not path.exists():
        raise ParamsError(f"{EFFECTIVE_FILE} is missing: run `llm-lifecycle params` (or `llm-lifecycle run`) first")
    values = yaml.safe_load(path.read_text())
    return _parse(ws.param_models()[section], section, values.get(section))


def digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def _merge(base: dict, overlay: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _assign(values: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = values
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            where = ".".join(parents[: i + 1])
            raise ParamsError(f"override {dotted!r}: {where!r} is not a section; sections: {', '.join(node)}")
        node = node[part]
    node[leaf] = value
