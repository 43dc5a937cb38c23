"""`llm-lifecycle preflight`: two local ranks meet, all-reduce and time a large all-reduce; every problem found says
what to fix. (Two nodes: tests/faults/test_two_nodes.py.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from components.train.launch import LaunchParams, command, world_size
from components.train.preflight import check, expected_bus_gbps, problems_of, project_digest

ROOT = Path(__file__).resolve().parents[2]


def test_two_local_ranks_pass_through_the_cli(tmp_path):
    out = subprocess.run([Path(sys.executable).parent / "llm-lifecycle", "preflight", "--json",
                          "--set", "pretrain.launch.nproc_per_node=2", "--ckpt-dir", str(tmp_path), "--min-disk-gb",
                          "0.001", "--bandwidth-params", str(2**20)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout[out.stdout.index("{"):])
    assert report["ok"] and report["world"] == 2 and report["problems"] == []
    assert sorted(r["rank"] for r in report["ranks"]) == [0, 1]
    assert {r["code"] for r in report["ranks"]} == {project_digest()} and all(r["ckpt_writable"] for r in report["ranks"])
    assert all(r["bandwidth_mb"] == 4.194304 and r["bus_gbps"] > 0 for r in report["ranks"])  # measured, not judged on CPU


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


def test_bandwidth_below_the_interconnect_floor_is_flagged_with_what_to_check():
    spec = {"ckpt_dir": "/ckpt", "min_free_disk_gb": 1, "min_free_gpu_gb": 0, "nproc_per_node": 8, "min_bus_gbps": None}
    across = {"bandwidth_mb": 268.4, "expected_bus_gbps": expected_bus_gbps(cuda=True, nodes=4)}
    healthy = [facts("a", 0, bus_gbps=44.0, **across), facts("b", 8, bus_gbps=41.5, **across)]
    assert problems_of(healthy, spec, all_reduce_ok=True) == []
    sockets = [facts("a", 0, bus_gbps=44.0, **across), facts("b", 8, bus_gbps=3.2, **across)]
    found = problems_of(sockets, spec, all_reduce_ok=True)
    assert len(found) == 1 and found[0].startswith("all-reduce bus bandwidth 3.2 GB/s on b (rank 8, 268 MB buffer), "
                                                   "below the 20 GB/s")
    assert "NET/Socket" in found[0] and "--min-bus-gbps" in found[0]
    assert problems_of(sockets, spec | {"min_bus_gbps": 2.0}, all_reduce_ok=True) == []  # the user's own floor
    one_node = {"bandwidth_mb": 268.4, "expected_bus_gbps": expected_bus_gbps(cuda=True, nodes=1)}
    assert "below the 100 GB/s" in problems_of([facts("a", 0, bus_gbps=45.0, **one_node)], spec, True)[0]  # no NVLink
    cpu = {"bandwidth_mb": 16.8, "expected_bus_gbps": expected_bus_gbps(cuda=False, nodes=2)}
    assert problems_of([facts("a", 0, bus_gbps=0.4, **cpu), facts("b", 1, bus_gbps=0.5, **cpu)], spec, True) == []


def test_torchrun_across_nodes_meets_at_the_rendezvous_host():
    with pytest.raises(ValidationError, match="set launch.master_addr"):
        LaunchParams(nnodes=2)
    launch = LaunchParams(nnodes=2, nproc_per_node=8, master_addr="node01", master_port=29600)
    cmd = command(launch, "components.train.preflight", "spec.json")
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "8", "--nnodes", "2", "--rdzv_backend",
                       "c10d", "--rdzv_endpoint", "node01:29600", "--rdzv_id", "llm-lifecycle", "-m",
                       "components.train.preflight", "spec.json"]
    assert world_size(launch) == 16
