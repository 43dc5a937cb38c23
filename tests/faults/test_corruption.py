"""A published output damaged after the fact (a byte flipped in a token shard, a Parquet shard truncated, a DVC cache
file deleted): the next stage's first act names the file and stops; nothing downstream runs."""
from __future__ import annotations

import time

import pytest

from components.storage import file_md5
from tasks.dag import Workspace
from tasks.integrity import _cache_dir, _object, check_inputs
from tests.faults.conftest import BIN, CHEAP, WORKSPACE_TESTS

pytestmark = WORKSPACE_TESTS


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def delete_cache_copy(path) -> None:
    root = next(p for p in path.parents if (p / ".dvc").is_dir())
    _object(_cache_dir(root), file_md5(path)).unlink()


# fault → (workspace built up to, the damaged file, the stage that reads it next, what the message says, the fix)
FAULTS = {
    "truncated Parquet shard": ("curate", "data/ingest/records-00000.parquet", "clean", truncate,
                                "content changed after ingest published it", ("checkout", "--force", "data/ingest")),
    "deleted cache file": ("curate", "data/ingest/records-00000.parquet", "clean", delete_cache_copy,
                           "its DVC cache copy", ("commit", "--force", "ingest")),
    "byte flipped in a token shard": ("tokenize", "data/tokenize/train-00000.bin", "pretrain", flip_a_byte,
                                      "content changed after tokenize published it", ("checkout", "--force", "data/tokenize")),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_damaged_output_is_named_before_the_next_stage_reads_it(copy_of, fault):
    built, damaged, reader, damage, says, fix = FAULTS[fault]
    upstream = damaged.split("/")[1]
    ws = copy_of(*CHEAP, built)
    reader_out = f"data/{reader}"
    reader_before = ws.snapshot(reader_out) if (ws.root / reader_out).exists() else None
    damage(ws.root / damaged)

    ran, proc = ws.repro("--single-item", "--force", reader, check=False)  # the reader alone, as a deployment runs it

    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and ran == [reader], message[-3000:]
    assert f"{damaged}: {says}" in message and "nothing was read" in message, message[-3000:]
    assert (ws.snapshot(reader_out) if reader_before is not None else None) == reader_before

    started = time.monotonic()
    ws.sh(f"{BIN}/dvc", *fix)
    check_inputs(Workspace(ws.root), {upstream: f"data/{upstream}"})  # what the reader checks first now passes
    print(f"\n{fault}: repaired by `dvc {' '.join(fix)}` in {time.monotonic() - started:.1f} s")
    if reader_before is not None:
        assert reader not in ws.changed(reader), "after the repair the reader's last output is current again"


