"""Before a stage reads an upstream output: is every file what dvc.lock says the upstream published, and is it
still in the DVC cache (what `dvc push` and `dvc checkout` restore it from)?

A byte flipped or a shard truncated after publication, a file added or removed, a cache object deleted: each is
named, with what to run, and the stage stops before reading anything. An upstream DVC has no lock entry for
(outputs fetched some other way) has nothing to compare with and is passed.

A file's md5 comes from DVC's state database when DVC hashed that very file before (same inode, size and mtime:
what `dvc status` trusts too), so a stage over terabytes of shards does not read them all again at start; a file
written since is hashed afresh. Corruption that keeps a file's size and mtime (bit rot) is left to the storage's
own checksums, as with DVC.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from dvc_data.hashfile.hash import hash_file
from dvc_objects.fs.local import LocalFileSystem

from tasks.dag import StageError, Workspace


class InputChanged(StageError):
    """An upstream output differs from what dvc.lock records, or its DVC cache copy is gone."""


def check_inputs(ws: Workspace, inputs: dict[str, str]) -> None:
    """`inputs`: upstream stage → the folder of it that the stage reads (relative to the workspace)."""
    with ws.dvc() as repo:
        md5 = functools.partial(_md5, repo.state)
        problems = [p for upstream, folder in inputs.items() for p in _problems(ws, md5, upstream, folder)]
    if problems:
        raise InputChanged("an input is not what its stage published; nothing was read:\n  " + "\n  ".join(problems))


def _problems(ws: Workspace, md5, upstream: str, folder: str) -> list[str]:
    out = next((o for o in ws.lock_entry(upstream).get("outs", []) if o["path"] == folder), None)
    if out is None:
        return []
    cache = _cache_dir(ws.root)
    listing_file = _object(cache, out["md5"])
    if not listing_file.exists():
        return [f"{folder}: its file list ({out['md5']}) is not in the DVC cache {cache}: "
                f"`dvc pull {folder}` fetches it, or rerun {upstream} (`llm-lifecycle run --stages {upstream} --force`)"]
    expected = {e["relpath"]: e["md5"] for e in json.loads(listing_file.read_text())}
    root = ws.root / folder
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    rerun = (f"`dvc checkout --force {folder}` puts back the published copy from the DVC cache, or rerun {upstream} "
             f"(`llm-lifecycle run --stages {upstream} --force`)")
    problems = [f"{folder}/{name}: missing; {rerun}" for name in sorted(expected.keys() - found)]
    problems += [f"{folder}/{name}: not published by {upstream}; remove it or {rerun}"
                 for name in sorted(found - expected.keys())]
    for name in sorted(found & expected.keys()):
        actual = md5(root / name)
        if actual != expected[name]:
            problems.append(f"{folder}/{name}: content changed after {upstream} published it (md5 {actual}, "
                            f"dvc.lock {expected[name]}); {rerun}")
        elif not _object(cache, expected[name]).exists():
            problems.append(f"{folder}/{name}: its DVC cache copy ({expected[name]}) is gone, so `dvc push` and "
                            f"`dvc checkout` cannot restore it; the file itself is intact: "
                            f"`dvc commit --force {upstream}` caches it again")
    return problems


def _md5(state, path: Path) -> str:
    return hash_file(str(path), LocalFileSystem(), "md5", state=state)[1].value


def _object(cache: Path, md5: str) -> Path:
    return cache / md5[:2] / md5[2:]


@functools.lru_cache(maxsize=8)
def _cache_dir(root: Path) -> Path:
    """Where DVC keeps objects by md5 (.dvc/cache/files/md5 unless `dvc cache dir` moved it)."""
    with Workspace(root).dvc() as repo:
        return Path(repo.cache.local.path)
