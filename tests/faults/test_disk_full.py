"""The disk fills while a stage writes (a small tmpfs mounted as the workspace's data folder): a clear error naming
the path and the space needed, the previous output intact, and a rerun once there is room."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.faults.conftest import WORKSPACE_TESTS

pytestmark = WORKSPACE_TESTS


def mount_tmpfs(folder, size_kb: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs as the data folder needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


@pytest.fixture
def small_data_disk(copy_of):
    """A workspace with ingest built whose data/ is a tmpfs with room for what it holds and a third of ingest's
    output more: a new ingest output cannot fit beside the old one."""
    ws = copy_of("ingest")
    data, saved = ws.root / "data", ws.root / "data.saved"
    data.rename(saved)
    data.mkdir()
    mount_tmpfs(data, size_kb=(_size(saved) + _size(saved / "ingest") // 3) // 1024 + 64)
    try:
        shutil.copytree(saved, data, dirs_exist_ok=True)
        yield ws
    finally:
        subprocess.run(["umount", "--lazy", str(data)], check=True)


def test_disk_full_during_a_write_names_the_path_and_space_and_keeps_the_old_output(small_data_disk):
    ws = small_data_disk
    before = ws.snapshot("data/ingest")
    ws.params("crawl.shard_records=10")  # a new output about as large as the old one: it cannot fit beside it

    ran, proc = ws.repro("--single-item", "ingest", check=False)

    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and ran == ["ingest"]
    assert "no space left on the device holding" in message and f"{ws.root}/data/.staging-ingest-" in message
    assert "Make at least" in message and "its last output took" in message and "is intact" in message
    assert "Traceback" not in message  # a message for people, not a stack
    assert ws.snapshot("data/ingest") == before
    assert not list((ws.root / "data").glob(".staging-*")), "the half-written output was left taking the space"
    assert "ingest" in ws.changed("ingest")  # dvc.lock still records the old output; the change is still due

    subprocess.run(["mount", "-o", "remount,size=1g", str(ws.root / "data")], check=True)  # room made (a tmpfs uses only what it holds)
    started = time.monotonic()
    ran, _ = ws.repro("--single-item", "ingest")
    print(f"\nrerun after the disk was enlarged: {time.monotonic() - started:.1f} s")  # for docs/reliability.md
    assert ran == ["ingest"] and ws.snapshot("data/ingest") != before and not ws.changed("ingest")


def _size(folder) -> int:
    """Bytes allocated (whole blocks, as a tmpfs counts them), not bytes written."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())
