"""Content digests of output files, recorded in manifests and checked by readers."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_digest(root: Path, folders: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex) over the Python files under `folders` of `root` and the `extra` files, names and
    contents: equal exactly when two checkouts would run the same code, with or without git."""
    digest = hashlib.sha256()
    files = [p for folder in folders for p in sorted((root / folder).rglob("*.py"))] + [root / f for f in extra]
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
