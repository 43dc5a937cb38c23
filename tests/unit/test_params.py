"""Parameter resolution: presets, overrides, validation messages, offline data mapping."""
from __future__ import annotations

import pytest
import yaml

from tasks.dag import Workspace
from tasks.params import EFFECTIVE_FILE, ParamsError, load_effective, parse_overrides, resolve, write_effective
from tests.conftest import make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(make_workspace(tmp_path_factory.mktemp("ws")))


def test_overrides_are_yaml_scalars():
    assert parse_overrides(["crawl.max_records=50", "crawl.s3.anon=true", "crawl.s3.endpoint_url=null"]) == {
        "crawl.max_records": 50, "crawl.s3.anon": True, "crawl.s3.endpoint_url": None}
    assert parse_overrides({"crawl.max_records": "7"}) == {"crawl.max_records": 7}
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        parse_overrides(["crawl.max_records"])


def test_tiny_is_the_default_and_presets_overlay_it(ws, monkeypatch):
    monkeypatch.delenv("LLM_LIFECYCLE_DATA_DIR", raising=False)
    tiny = resolve(ws)
    assert tiny["preset"] == "tiny" and tiny["crawl"]["shard_records"] == 1000
    assert tiny["crawl"]["sources"][0]["uri"].startswith("https://")
    gpu = resolve(ws, "gpu")
    assert gpu["crawl"]["sources"] == [{"uri": "commoncrawl://CC-MAIN-2024-22", "offline": None}]
    assert gpu["crawl"]["min_html_bytes"] == tiny["crawl"]["min_html_bytes"]  # not overlaid: kept from the base
    assert resolve(ws, "multi-node", {"crawl.shard_records": 5})["crawl"]["shard_records"] == 5


def test_errors_name_the_key_path_and_what_is_allowed(ws):
    with pytest.raises(ParamsError, match=r"crawl\.max_records: Input should be greater than 0"):
        resolve(ws, overrides={"crawl.max_records": 0})
    with pytest.raises(ParamsError, match=r"crawl\.shard_recrods: Extra inputs are not permitted"):
        resolve(ws, overrides={"crawl.shard_recrods": 5})
    with pytest.raises(ParamsError, match=r"crawl\.s3\.anon: Input should be a valid boolean"):
        resolve(ws, overrides={"crawl.s3.anon": "maybe"})
    with pytest.raises(ParamsError, match="preset 'huge' is not defined; allowed: tiny, gpu, multi-node"):
        resolve(ws, "huge")
    with pytest.raises(ParamsError, match="'nope' is not a section"):
        resolve(ws, overrides={"nope.x": 1})


def test_data_dir_points_sources_at_offline_copies(ws, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_LIFECYCLE_DATA_DIR", str(tmp_path))
    sources = resolve(ws)["crawl"]["sources"]
    assert sources[0]["uri"] == str(tmp_path / "crawl/resiliparse-warcfile.warc.gz")


def test_effective_file_is_what_stages_read_and_is_rewritten_only_on_change(ws, monkeypatch):
    monkeypatch.delenv("LLM_LIFECYCLE_DATA_DIR", raising=False)
    path = write_effective(ws, resolve(ws, overrides={"crawl.max_records": 3}))
    assert path.name == EFFECTIVE_FILE and yaml.safe_load(path.read_text())["crawl"]["max_records"] == 3
    mtime = path.stat().st_mtime_ns
    write_effective(ws, resolve(ws, overrides={"crawl.max_records": 3}))
    assert path.stat().st_mtime_ns == mtime  # DVC sees no change
    assert load_effective(ws, "crawl").max_records == 3
