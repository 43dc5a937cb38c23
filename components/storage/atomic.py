"""Atomic publication of an output folder.

A stage writes into a hidden staging folder beside its output; only when it finishes (and its gate
passes) is the staging folder renamed into place. A rename within one filesystem is atomic, so a
killed stage leaves at most a `.staging-*` folder, never an output that looks complete.
"""
from __future__ import annotations

import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_dir(final: Path):
    """Yield an empty staging folder; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(final)
    staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace(staging, final)


def _replace(staging: Path, final: Path) -> None:
    old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        final.rename(old)  # two renames, so a reader sees the old output or the new one, never a mix
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(final: Path) -> None:
    """Staging folders of killed earlier attempts."""
    for pattern in (f".staging-{final.name}-*", f".old-{final.name}-*"):
        for leftover in final.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
