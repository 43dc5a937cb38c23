"""Package attributes imported on first use (PEP 562), for packages whose submodules import torch.

Every flow run reads the parameters of every stage, and a no-op rerun should not pay seconds of torch and
transformers imports for it: a package keeps its params eager and names the rest here.
"""
from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_names(package: str, where: dict[str, str]) -> Callable[[str], object]:
    """A module-level __getattr__ for `package`: name → the submodule (relative to it) that defines it.

    A name may not be one of those submodules' own names: once anything imports the submodule, Python binds it as
    the package's attribute of that name, and __getattr__ is no longer asked (the function would become a module)."""
    shadowed = sorted(set(where) & set(where.values()))
    if shadowed:
        raise ValueError(f"{package}: {shadowed} name both a lazy attribute and a submodule; import it from the "
                         "submodule instead")

    def __getattr__(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{where[name]}"), name)
    return __getattr__
