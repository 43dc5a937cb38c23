"""Atomic publication of an output folder.

A stage writes into a hidden staging folder beside its output; only when it finishes (and its gate
passes) does the staging folder take the output's place. A killed stage leaves at most a `.staging-*`
folder, never an output that looks complete, and never no output where there was one.

The swap is one atomic step where the filesystem allows it (Linux `renameat2(RENAME_EXCHANGE)`: ext4, xfs,
btrfs, tmpfs, overlayfs): the output folder holds the old files or the new ones at every instant, and stays a
real folder, so `dvc status` / `dvc commit` read it as before. Elsewhere it takes two renames
(`final → .old-*`, `.staging-* → final`); a kill between them leaves no output folder, so the next start
puts the `.old-*` folder back (it is what dvc.lock still records: the kill also stopped DVC writing the new
lock entry) before it clears anything.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextmanager
def staged_dir(final: Path):
    """Yield an empty staging folder; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    repaired = recover(final)
    if repaired:
        log.warning(repaired)
    staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace(staging, final)


def recover(final: Path) -> str | None:
    """Repair what a killed publication left beside `final`; say what was done (None: nothing to do).

    An `.old-*` folder with no `final` is the last good output caught between the two renames: it is put
    back. Every other leftover (a half-written `.staging-*`, an `.old-*` the new output already replaced)
    is removed."""
    final = Path(final)
    olds = sorted(final.parent.glob(f".old-{final.name}-*"), key=lambda p: p.stat().st_mtime)
    restored = None
    if olds and not final.exists():
        olds.pop().rename(final)  # there is only ever one; the newest if an older run also left one
        restored = f"restored {final} from the last good output left by an interrupted publication"
    leftovers = [*olds, *final.parent.glob(f".staging-{final.name}-*")]
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
    return restored or (f"removed {len(leftovers)} leftover folder(s) of an interrupted run" if leftovers else None)


def _replace(staging: Path, final: Path) -> None:
    if not final.exists():
        staging.rename(final)
    elif _exchange(staging, final):  # `final` now holds the new files, `staging` the old ones
        shutil.rmtree(staging, ignore_errors=True)
    else:
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        final.rename(old)  # from here until the next line there is no `final`: recover() repairs a kill here
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step; False where the platform or filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # this filesystem cannot swap
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))
