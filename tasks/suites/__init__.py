"""The Great Expectations suites that gate every hand-off between stages, kept as Python.

One module per suite: ``tasks/suites/<name>.py`` defines

- ``NAME``: the suite name (equal to the module name);
- ``expectations(params)``: a fresh list of GX expectation objects (built per validation, so bounds such as
  "now + 1 day" are current; `params` is the stage's parameter model, for suites that depend on it);
- optionally ``derive(df)``: returns the shard with extra columns computed in Python (e.g. PII found by the
  scrubber's own detector), so expectations can check what no regex alone can express;
- optionally ``ROW_ID``: the column that names a row in failure reports (example record ids);
- optionally ``ROW_CONTEXT``: further columns shown with each failing row (a model check's value and limit);
- optionally ``UNIQUE_ACROSS_SHARDS``: columns whose values must be unique over all shards of a dataset
  (GX validates one shard at a time; `tasks.gates` checks these itself).

The registry is the package itself: ``load(name)`` imports ``tasks.suites.<name>``; there is no hand-kept list.
Importing this package does not import great_expectations (suite modules import it inside ``expectations()``).
"""
from __future__ import annotations

import os
import pkgutil
from importlib import import_module
from types import ModuleType

# Before any great_expectations import anywhere below this package: no usage statistics.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class UnknownSuiteError(LookupError):
    """No module tasks/suites/<name>.py defines that suite."""


def available() -> list[str]:
    """Names of all suites in this package, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and not m.ispkg)


def load(name: str) -> ModuleType:
    """The suite module for `name`; UnknownSuiteError (listing the available suites) if there is none."""
    names = available()
    if name not in names:  # also keeps arbitrary strings from being imported as modules
        raise UnknownSuiteError(
            f"unknown Great Expectations suite {name!r}: available suites are {', '.join(names) or '(none)'} "
            f"(one module per suite in tasks/suites/)"
        )
    module = import_module(f"{__name__}.{name}")
    if getattr(module, "NAME", None) != name or not callable(getattr(module, "expectations", None)):
        raise UnknownSuiteError(f"tasks/suites/{name}.py must define NAME = {name!r} and expectations()")
    return module
