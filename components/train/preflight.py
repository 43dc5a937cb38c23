"""Checks before a multi-node job spends its allocation: every host reachable, the same code everywhere, a
collective across all ranks, enough GPUs, GPU memory and checkpoint disk. Each failure says what to fix.

`check(...)` runs on the launching machine: ssh to each host of a hostfile, then the same launch command as
training (`launch.command`) starts `python -m components.train.preflight SPEC.json` on every rank. Each rank
joins the process group, all-reduces a tensor, and gathers its facts to rank 0, which judges them and writes
the report. A collective that never completes is itself the finding (firewall, wrong interface, a host
that never started), so the launch runs under a timeout.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from components.storage import code_digest
from components.train.launch import LaunchParams, command, die_with_parent, hosts, world_size

ROOT = Path(__file__).resolve().parents[2]
CODE = ("components", "tasks", "flows", "infra")  # the project's code: what must be the same on every node
PACKAGES = ("torch", "deepspeed", "transformers")


def project_digest() -> str:
    """The digest of the project's code and pyproject.toml: equal on two nodes that would run the same code."""
    return code_digest(ROOT, CODE, extra=("pyproject.toml",))


def check(launch: LaunchParams, ckpt_dir: Path, min_free_disk_gb: float = 10.0, min_free_gpu_gb: float = 0.0,
          timeout_s: float = 180.0) -> dict:
    """{"ok", "problems": [...], "ranks": [facts per rank], "world"}; problems are sentences saying what to fix."""
    unreachable = _unreachable_hosts(launch)
    if unreachable:
        return {"ok": False, "problems": unreachable, "ranks": [], "world": world_size(launch)}
    with tempfile.TemporaryDirectory(prefix="preflight-", dir=_shared_tmp(ckpt_dir)) as tmp:
        spec, report = Path(tmp) / "spec.json", Path(tmp) / "report.json"
        spec.write_text(json.dumps({"ckpt_dir": str(ckpt_dir), "min_free_disk_gb": min_free_disk_gb,
                                    "min_free_gpu_gb": min_free_gpu_gb, "nproc_per_node": launch.nproc_per_node,
                                    "report": str(report), "timeout_s": timeout_s}))
        cmd = command(launch, "components.train.preflight", str(spec))
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                                  preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            return {"ok": False, "ranks": [], "world": world_size(launch), "problems": [
                f"the ranks did not all join and all-reduce within {timeout_s:.0f} s: check that every node can "
                f"reach {launch.master_addr or 'the first host'} on port {launch.master_port} (firewall), that "
                "NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME name the interface the nodes share, and that every "
                "host of the hostfile started its ranks"]}
        if not report.exists():
            tail = (proc.stdout + proc.stderr)[-3000:]
            return {"ok": False, "ranks": [], "world": world_size(launch), "problems": [
                f"the preflight ranks failed before reporting (exit {proc.returncode}); their output ends:\n{tail}"]}
        return json.loads(report.read_text())


def _unreachable_hosts(launch: LaunchParams) -> list[str]:
    if launch.launcher != "deepspeed":
        return []
    problems = []
    for host, _ in hosts(launch.hostfile):
        if host in ("localhost", "127.0.0.1", socket.gethostname()):
            continue
        probe = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", host, "true"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            problems.append(f"cannot ssh to {host} without a password ({probe.stderr.strip() or probe.returncode}):"
                            f" the deepspeed launcher needs key-based ssh from this node to every host of "
                            f"{launch.hostfile} (ssh-copy-id {host}; accept its host key once)")
    return problems


def _shared_tmp(ckpt_dir: Path) -> Path:
    """The spec and report must be visible to every node: next to the checkpoints, which must be shared."""
    base = Path(ckpt_dir)
    base.mkdir(parents=True, exist_ok=True)
    return base


# --- on every rank ---

def _facts(spec: dict) -> dict:
    import torch

    ckpt = Path(spec["ckpt_dir"])
    facts = {"host": socket.gethostname(), "rank": int(os.environ["RANK"]),
             "local_rank": int(os.environ.get("LOCAL_RANK", 0)), "code": project_digest(),
             "versions": {name: _version(name) for name in PACKAGES}, "python": sys.version.split()[0],
             "free_disk_gb": shutil.disk_usage(ckpt).free / 1e9, "ckpt_writable": _writable(ckpt),
             "gpus": torch.cuda.device_count(), "free_gpu_gb": None}
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(facts["local_rank"] % torch.cuda.device_count())
        facts["free_gpu_gb"] = free / 1e9
    return facts


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "missing"


def _writable(folder: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def problems_of(ranks: list[dict], spec: dict, all_reduce_ok: bool) -> list[str]:
    """Rank 0's judgement of every rank's facts."""
    found = [] if all_reduce_ok else [f"the all-reduce across {len(ranks)} ranks returned a wrong sum: the "
                                      "collective backend is broken (check NCCL/gloo versions on every node)"]
    for what, key in (("code", "code"), ("package versions", "versions"), ("Python", "python")):
        seen: dict[str, list[str]] = {}
        for facts in ranks:
            seen.setdefault(json.dumps(facts[key], sort_keys=True), []).append(facts["host"])
        if len(seen) > 1:
            groups = "; ".join(f"{sorted(set(h))}: {v}" for v, h in seen.items())
            found.append(f"{what} differ between nodes ({groups}): deploy the same checkout and environment "
                         "everywhere (same commit, same `pip install -c infra/constraints.txt`)")
    for facts in ranks:
        where = f"{facts['host']} (rank {facts['rank']})"
        if facts["free_disk_gb"] < spec["min_free_disk_gb"]:
            found.append(f"{where}: {facts['free_disk_gb']:.1f} GB free under {spec['ckpt_dir']}, need "
                         f"{spec['min_free_disk_gb']:g} GB for checkpoints: free space or point the checkpoints "
                         "at a larger (shared) filesystem")
        if not facts["ckpt_writable"]:
            found.append(f"{where}: cannot write to {spec['ckpt_dir']}: fix its permissions or mount")
        if not facts["gpus"] and spec["min_free_gpu_gb"] > 0:
            found.append(f"{where}: no GPU visible, yet {spec['min_free_gpu_gb']:g} GB of GPU memory is required: "
                         "torch is a CPU build (reinstall the CUDA wheel) or CUDA_VISIBLE_DEVICES hides the GPUs")
        if facts["gpus"] and facts["gpus"] < spec["nproc_per_node"]:
            found.append(f"{where}: {facts['gpus']} GPUs visible for {spec['nproc_per_node']} ranks per node: "
                         "lower nproc_per_node or check CUDA_VISIBLE_DEVICES")
        if facts["free_gpu_gb"] is not None and facts["free_gpu_gb"] < spec["min_free_gpu_gb"]:
            found.append(f"{where}: {facts['free_gpu_gb']:.1f} GB of GPU memory free, need "
                         f"{spec['min_free_gpu_gb']:g}: another job holds the GPU (nvidia-smi)")
    return found


def main(spec_path: str) -> int:
    import torch
    import torch.distributed as dist

    die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=spec["timeout_s"]))
    world = dist.get_world_size()
    ones = torch.ones(1, device="cuda" if cuda else "cpu")
    dist.all_reduce(ones)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, _facts(spec))
    if dist.get_rank() == 0:
        problems = problems_of(gathered, spec, all_reduce_ok=int(ones.item()) == world)
        report = {"ok": not problems, "problems": problems, "ranks": gathered, "world": world}
        Path(spec["report"]).write_text(json.dumps(report, indent=2))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
