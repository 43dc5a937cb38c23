"""Checks before a multi-node job spends its allocation: every host reachable, the same code everywhere, a
collective across all ranks fast enough for the interconnect, enough GPUs, GPU memory and checkpoint disk. Each
failure says what to fix.

`check(...)` runs on the launching machine (with torchrun on several nodes: on every node, with the same
settings): ssh to each host of a hostfile, then the same launch command as training (`launch.command`) starts
`python -m components.train.preflight SPEC.json` on every rank. Each rank joins the process group, all-reduces a
tensor, times a large all-reduce, and gathers its facts to every rank; the first rank of each node judges them
and writes that node's report. A collective that never completes is itself the finding (firewall, wrong
interface, a host that never started), so the launch runs under a timeout.

Bandwidth: one float all-reduced proves the ranks can talk, not that they talk fast. A job whose NCCL fell back
from InfiniBand/NVLink to TCP sockets trains, at a tenth of the speed. So `bandwidth_params` fp32 values are
all-reduced a few times and the bus bandwidth (nccl-tests' busbw: the bytes each rank's link carries per second,
2(n-1)/n of the buffer per all-reduce) is compared with a floor for the interconnect (`expected_bus_gbps`).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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
          timeout_s: float = 180.0, bandwidth_params: int | None = None, min_bus_gbps: float | None = None) -> dict:
    """{"ok", "problems": [...], "ranks": [facts per rank], "world"}; problems are sentences saying what to fix.
    `bandwidth_params`: fp32 values in the timed all-reduce (default 2**26 = 268 MB on GPUs, 2**22 on CPU);
    `min_bus_gbps`: the bus bandwidth below which the interconnect is flagged (default `expected_bus_gbps`)."""
    unreachable = _unreachable_hosts(launch)
    if unreachable:
        return {"ok": False, "problems": unreachable, "ranks": [], "world": world_size(launch)}
    with tempfile.TemporaryDirectory(prefix="preflight-", dir=_shared_tmp(ckpt_dir)) as tmp:
        spec, report = Path(tmp) / "spec.json", Path(tmp) / "report.json"
        spec.write_text(json.dumps({"ckpt_dir": str(ckpt_dir), "min_free_disk_gb": min_free_disk_gb,
                                    "min_free_gpu_gb": min_free_gpu_gb, "nproc_per_node": launch.nproc_per_node,
                                    "report": str(report), "timeout_s": timeout_s,
                                    "bandwidth_params": bandwidth_params, "min_bus_gbps": min_bus_gbps}))
        cmd = command(launch, "components.train.preflight", str(spec))
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                                  preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            return {"ok": False, "ranks": [], "world": world_size(launch), "problems": [
                f"the {world_size(launch)} ranks did not all join and all-reduce within {timeout_s:.0f} s: check "
                f"that every node can reach {launch.master_addr or 'the first host'} on port {launch.master_port} "
                "(firewall), that NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME name the interface the nodes share, and "
                f"that every node started its ranks{_every_node_runs_it(launch)}"]}
        if not report.exists():
            tail = (proc.stdout + proc.stderr)[-3000:]
            return {"ok": False, "ranks": [], "world": world_size(launch), "problems": [
                f"the preflight ranks failed before reporting (exit {proc.returncode}); their output ends:\n{tail}"]}
        return json.loads(report.read_text())


def _every_node_runs_it(launch: LaunchParams) -> str:
    if launch.launcher == "torchrun" and launch.nnodes > 1:
        return f" (torchrun on {launch.nnodes} nodes: run the same preflight command on each of them)"
    return " (every host of the hostfile)" if launch.launcher == "deepspeed" else ""


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


def expected_bus_gbps(cuda: bool, nodes: int) -> float:
    """The bus bandwidth (GB/s) below which the interconnect is not what it should be. One node of H100/H200
    SXM: NVLink 4 carries 450 GB/s each way and nccl-tests' all-reduce reaches ≈ 350-480 GB/s busbw; PCIe
    Gen5 GPUs without NVLink ≈ 40-50. Across nodes with one 400 Gb/s InfiniBand/RoCE NIC per GPU (50 GB/s):
    ≈ 40-48; NCCL over TCP sockets on the same NICs typically 1-10. The floors sit between the healthy and the
    fallen-back numbers. On CPU (gloo) nothing is expected: the number is only reported."""
    if not cuda:
        return 0.0
    return 20.0 if nodes > 1 else 100.0


def bus_problem(ranks: list[dict], spec: dict) -> list[str]:
    """The slowest rank's bus bandwidth against the floor: a collective runs at its slowest link."""
    measured = [facts for facts in ranks if facts.get("bus_gbps") is not None]
    if not measured:
        return []
    slowest = min(measured, key=lambda facts: facts["bus_gbps"])
    floor = spec["min_bus_gbps"] if spec.get("min_bus_gbps") is not None else slowest["expected_bus_gbps"]
    if slowest["bus_gbps"] >= floor:
        return []
    return [f"all-reduce bus bandwidth {slowest['bus_gbps']:.1f} GB/s on {slowest['host']} (rank {slowest['rank']}, "
            f"{slowest['bandwidth_mb']:.0f} MB buffer), below the {floor:g} GB/s this interconnect should give: "
            "NCCL may have fallen back to TCP sockets (run with NCCL_DEBUG=INFO and look for 'NET/Socket' instead of "
            "'NET/IB'; check NCCL_IB_HCA, the RDMA drivers and NCCL_SOCKET_IFNAME), or NVLink is missing "
            "(nvidia-smi topo -m). PCIe-only GPUs or a slower network: lower --min-bus-gbps"]


def problems_of(ranks: list[dict], spec: dict, all_reduce_ok: bool) -> list[str]:
    """The judgement of every rank's facts (the same on every rank: they all hold every rank's facts)."""
    found = [] if all_reduce_ok else [f"the all-reduce across {len(ranks)} ranks returned a wrong sum: the "
                                      "collective backend is broken (check NCCL/gloo versions on every node)"]
    found += bus_problem(ranks, spec)
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


def bus_bandwidth(device, values: int, repeats: int = 5) -> dict:
    """Time all-reduces of `values` fp32 numbers (after one untimed, which sets up the connections): the
    algorithm bandwidth (buffer bytes / time) and the bus bandwidth (× 2(n-1)/n, what each link carries; the
    number nccl-tests reports and the one to compare with a link's speed), in GB/s, from the median time."""
    import torch
    import torch.distributed as dist

    world = dist.get_world_size()
    buffer = torch.ones(values, dtype=torch.float32, device=device)
    dist.all_reduce(buffer)
    times = []
    for _ in range(repeats):
        _synchronize(device)
        began = time.perf_counter()
        dist.all_reduce(buffer)
        _synchronize(device)
        times.append(time.perf_counter() - began)
    seconds = statistics.median(times)
    algorithm = buffer.numel() * buffer.element_size() / seconds / 1e9
    return {"bandwidth_mb": buffer.numel() * buffer.element_size() / 1e6, "all_reduce_s": seconds,
            "algorithm_gbps": algorithm, "bus_gbps": algorithm * 2 * (world - 1) / world if world > 1 else None}


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    ones = torch.ones(1, device=device)
    dist.all_reduce(ones)
    nodes = world // int(os.environ.get("LOCAL_WORLD_SIZE", world))
    bandwidth = bus_bandwidth(device, spec.get("bandwidth_params") or (2**26 if cuda else 2**22))
    facts = _facts(spec) | bandwidth | {"all_reduce_ok": int(ones.item()) == world,
                                        "expected_bus_gbps": expected_bus_gbps(cuda, nodes)}
    gathered: list = [None] * world
    dist.all_gather_object(gathered, facts)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:  # one report per node: each node's launcher reads its own
        problems = problems_of(gathered, spec, all_reduce_ok=all(f["all_reduce_ok"] for f in gathered))
        report = {"ok": not problems, "problems": problems, "ranks": gathered, "world": world, "nodes": nodes}
        Path(spec["report"]).write_text(json.dumps(report, indent=2))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
