"""A stage reruns when its inputs change, and only then: a changed upstream output reruns exactly what reads it; a
raw file changed at the same path reruns the stage that reads it (params.sources.yaml holds its digest); every source
of the tiny preset reads a local copy when LLM_LIFECYCLE_DATA_DIR is set."""
from __future__ import annotations

import time

import pytest
import yaml

from tasks.dag import Workspace
from tasks.params import resolve
from tasks.sources import NO_LOCAL_FILES, SOURCES_FILE, is_remote, local_files, section_digest, source_uris
from tests.conftest import REPO
from tests.faults.conftest import STAGE_TIMEOUT_S
from tests.integration.test_pipeline import write_warc


def test_a_file_changed_at_the_same_path_changes_its_sections_digest(tmp_path):
    warc = tmp_path / "a.warc.gz"
    warc.write_bytes(b"one")
    section = {"sources": [{"uri": str(tmp_path / "*.warc.gz")}, {"uri": "https://example.com/b.warc.gz"}]}
    first = section_digest(section)
    warc.write_bytes(b"two")
    assert section_digest(section) != first != NO_LOCAL_FILES
    assert section_digest({"sources": [{"uri": "https://example.com/b.warc.gz"}]}) == NO_LOCAL_FILES


@pytest.fixture(scope="module")
def tiny(data_dir, monkeypatch_module) -> dict:
    monkeypatch_module.setenv("LLM_LIFECYCLE_DATA_DIR", str(data_dir))
    return resolve(Workspace(REPO), "tiny")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_source_of_the_tiny_preset_has_an_offline_copy(tiny, data_dir):
    uris = {section: source_uris(values) for section, values in tiny.items() if isinstance(values, dict)}
    remote = [f"{section}: {u}" for section, found in uris.items() for u in found if is_remote(u)]
    absent = [f"{section}: {u}" for section, found in uris.items() for u in found
              if not is_remote(u) and not local_files(u)]
    assert sum(map(len, uris.values())) > 20  # every section's sources were found, not just the crawl's first
    assert not remote, f"sources that would read the network though LLM_LIFECYCLE_DATA_DIR is set: {remote}"
    assert not absent, f"offline copies missing from {data_dir}: {absent}"


def test_every_stage_reading_raw_files_depends_on_their_digest(tiny):
    ws = Workspace(REPO)
    listed = {spec.name for spec in ws.stages
              if any(ws.module(spec.name).SECTION in (dep.get(SOURCES_FILE) or [])
                     for dep in _params_deps(spec.name))}
    reading = {spec.name for spec in ws.stages if section_digest(tiny[ws.module(spec.name).SECTION]) != NO_LOCAL_FILES}
    assert reading == listed and {"ingest", "curate"} <= reading


def _params_deps(name: str) -> list[dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    entry = stages[name.partition("@")[0]]
    entry = entry.get("do", entry)  # a foreach stage
    return [p for p in entry.get("params", []) if isinstance(p, dict)]


@pytest.mark.heavy
@pytest.mark.timeout(4 * STAGE_TIMEOUT_S)
def test_a_warc_changed_at_the_same_path_reruns_ingest_and_what_reads_it_only(copy_of):
    ws = copy_of("clean")
    warc = sorted((ws.data_dir / "crawl").glob("*.warc.gz"))[0]
    target = warc.readlink()
    try:
        warc.unlink()
        write_warc(warc, [(f"<urn:uuid:changed-{i}>", "2026-01-01T00:00:00Z", f"http://changed.example/{i}")
                          for i in range(5)])  # records found nowhere else (a copy of another WARC repeats its ids)
        ws.params()
        assert set(ws.changed("ingest", "curate", "clean")) == {"ingest"}  # clean is due only once ingest's output changes
        started = time.monotonic()
        ran, _ = ws.repro("--single-item", "ingest")
        assert ran == ["ingest"]
        assert set(ws.changed("ingest", "curate", "clean")) == {"clean"}, "exactly the reader of the new output is due"
        print(f"\nchanged WARC: ingest rerun in {time.monotonic() - started:.1f} s")
    finally:
        warc.unlink()
        warc.symlink_to(target)
