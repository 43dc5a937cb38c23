"""Content digests of the local raw files each params section reads, so DVC reruns a stage when one changes.

A source is named by path (`uri: /…/shared/data/crawl/x.warc.gz`, a folder or a glob), and the path alone is what
params.effective.yaml records: a WARC replaced at the same path would not change it. `params.sources.yaml` holds,
per section, a digest of the contents of every local file its sources name; the stages that read raw files list
their section of it as a DVC param, so a changed file reruns exactly that stage and what reads its output.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
from pathlib import Path

import yaml

from components.storage import file_md5
from tasks.dag import Workspace
from tasks.params import DATA_DIR_ENV

SOURCES_FILE = "params.sources.yaml"
NO_LOCAL_FILES = "no local files"
log = logging.getLogger(__name__)


def source_uris(values) -> list[str]:
    """Every `uri` value anywhere in a section's values (sources, evaluation tasks, text sets, seed files)."""
    if isinstance(values, dict):
        own = [values["uri"]] if isinstance(values.get("uri"), str) else []
        return own + [u for v in values.values() for u in source_uris(v)]
    if isinstance(values, list):
        return [u for v in values for u in source_uris(v)]
    return []


def is_remote(uri: str) -> bool:
    return "://" in uri


def local_files(uri: str) -> list[Path]:
    """The files a local uri names: itself, a folder's files, or a glob's matches."""
    files = []
    for match in sorted(glob.glob(uri)):
        path = Path(match)
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return files


def section_digest(values) -> str:
    digest, seen = hashlib.sha256(), False
    for uri in source_uris(values):
        for path in [] if is_remote(uri) else local_files(uri):
            digest.update(f"{path}\0{file_md5(path)}\0".encode())
            seen = True
    return digest.hexdigest()[:16] if seen else NO_LOCAL_FILES


def write_source_digests(ws: Workspace, params: dict) -> Path:
    """Write params.sources.yaml (section → digest) beside params.effective.yaml."""
    remote = [f"{section}: {uri}" for section, values in params.items() if isinstance(values, dict)
              for uri in source_uris(values) if is_remote(uri)]
    if remote and os.environ.get(DATA_DIR_ENV):  # offline data was asked for: say what will still use the network
        log.warning("%s is set, but these sources have no offline copy and read the network:\n  %s",
                    DATA_DIR_ENV, "\n  ".join(remote))
    path = ws.root / SOURCES_FILE
    digests = {section: section_digest(values) for section, values in params.items() if isinstance(values, dict)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# Written by llm-lifecycle with params.effective.yaml: a digest of the contents of the local raw\n"
                   "# files each section reads (DVC reruns a stage when one changes at the same path).\n"
                   + yaml.safe_dump(digests, sort_keys=False))
    tmp.replace(path)
    return path
