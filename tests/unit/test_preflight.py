"""`llm-lifecycle preflight`: two local ranks meet and all-reduce; every problem found says what to fix."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from components.train.launch import LaunchParams
from components.train.preflight import check, problems_of, project_digest

ROOT = Path(__file__).resolve().parents[2]


def test_two_local_ranks_pass_through_the_cli(tmp_path):
    out = subprocess.run([Path(sys.executable).parent / "llm-lifecycle", "preflight", "--json",
                          "--set", "pretrain.launch.nproc_per_node=2", "--ckpt-dir", str(tmp_path), "--min-disk-gb",
                          "0.001"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout[out.stdout.index("{"):])
    assert report["ok"] and report["world"] == 2 and report["problems"] == []
    assert sorted(r["rank"] for r in report["ranks"]) == [0, 1]
    assert {r["code"] for r in report["ranks"]} == {project_digest()} and all(r["ckpt_writable"] for r in report["ranks"])


def test_too_little_disk_fails_with_what_to_do(tmp_path):
    report = check(LaunchParams(nproc_per_node=1), tmp_path, min_free_disk_gb=1e12, timeout_s=120)
    assert not report["ok"] and len(report["problems"]) == 1
    assert "need 1e+12 GB for checkpoints: free space" in report["problems"][0]


def facts(host: str, rank: int, **overrides) -> dict:
    return {"host": host, "rank": rank, "code": "abc", "versions": {"torch": "2.13.0"}, "python": "3.11.7",
            "free_disk_gb": 500.0, "ckpt_writable": True, "gpus": 8, "free_gpu_gb": 130.0, **overrides}


def test_problems_name_the_node_and_the_fix():
    spec = {"ckpt_dir": "/ckpt", "min_free_disk_gb": 100, "min_free_gpu_gb": 60, "nproc_per_node": 8}
    assert problems_of([facts("a", 0), facts("b", 8)], spec, all_reduce_ok=True) == []
    found = problems_of([facts("a", 0), facts("b", 8, code="xyz", versions={"torch": "2.12.0"}, gpus=4,
                                               free_gpu_gb=10.0, ckpt_writable=False)], spec, all_reduce_ok=False)
    text = "\n".join(found)
    assert "all-reduce" in text and "code differ between nodes (['a']: " in text and "same commit" in text
    assert "package versions differ" in text and "b (rank 8): 4 GPUs visible for 8 ranks per node" in text
    assert "b (rank 8): 10.0 GB of GPU memory free, need 60" in text and "cannot write to /ckpt" in text
    cpu_only = problems_of([facts("a", 0, gpus=0, free_gpu_gb=None)], spec, all_reduce_ok=True)
    assert cpu_only == [cpu_only[0]] and "no GPU visible" in cpu_only[0] and "CPU build" in cpu_only[0]


def test_an_unreachable_host_is_named_before_anything_launches(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\nno-such-node.invalid slots=1\n")
    report = check(LaunchParams(launcher="deepspeed", hostfile=hostfile), tmp_path, timeout_s=30)
    assert not report["ok"] and len(report["problems"]) == 1
    assert report["problems"][0].startswith("cannot ssh to no-such-node.invalid without a password")
