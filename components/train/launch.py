"""How the ranks are started: torchrun on one node (or on each of `nnodes` nodes, meeting at a c10d rendezvous),
many nodes through the deepspeed launcher and a hostfile, or inside a Slurm allocation with srun. Training
and the preflight check use the same command.

Every launcher runs `python -m MODULE ARGS...` once per rank with the torch.distributed environment set
(RANK, WORLD_SIZE, MASTER_ADDR, ...). Across nodes the working directory, the config file and the
checkpoint folder must be at the same path on every node (a shared filesystem), which is how the
deepspeed launcher and Slurm recipes in docs/multinode.md are laid out.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from components.params import StrictModel


class LaunchParams(StrictModel):
    launcher: Literal["torchrun", "deepspeed", "slurm"] = Field(
        "torchrun", description="torchrun: ranks on this node; deepspeed: every node of `hostfile` over ssh "
                                "(pdsh); slurm: every node of the current allocation through srun")
    nproc_per_node: int = Field(1, gt=0, description="ranks per node: its GPUs; on CPU 1-2 (each rank gets "
                                                     "cores / nproc threads)")
    nnodes: int = Field(1, gt=0, description="torchrun: nodes that each run the same command and meet at "
                                             "master_addr:master_port (c10d rendezvous); 1: this node alone")
    hostfile: Path | None = Field(None, description="deepspeed launcher: lines 'HOST slots=N' (infra/hostfile.example)")
    master_addr: str | None = Field(None, description="rendezvous host (deepspeed: default the hostfile's first)")
    master_port: int = Field(29500, gt=0, lt=65536)

    @model_validator(mode="after")
    def _hostfile_for_deepspeed(self) -> LaunchParams:
        if self.launcher == "deepspeed" and self.hostfile is None:
            raise ValueError("launcher 'deepspeed' starts ranks on the nodes of a hostfile: set launch.hostfile "
                             "(see infra/hostfile.example)")
        return self

    @model_validator(mode="after")
    def _rendezvous_for_many_torchrun_nodes(self) -> LaunchParams:
        if self.launcher == "torchrun" and self.nnodes > 1 and not self.master_addr:
            raise ValueError(f"launcher 'torchrun' on {self.nnodes} nodes: set launch.master_addr to the address of "
                             "the node that hosts the rendezvous (every node runs the same command)")
        return self


def hosts(hostfile: Path) -> list[tuple[str, int]]:
    """(host, slots) per line of a DeepSpeed hostfile; blank lines and # comments skipped."""
    found = []
    for number, line in enumerate(Path(hostfile).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        host, _, slots = line.partition(" slots=")
        if not slots.strip().isdigit():
            raise ValueError(f"{hostfile}:{number}: expected 'HOST slots=N', got {line!r}")
        found.append((host.strip(), int(slots)))
    if not found:
        raise ValueError(f"{hostfile} lists no hosts")
    return found


def command(launch: LaunchParams, module: str, *args: str) -> list[str]:
    """The command line that starts `python -m module args` on every rank."""
    if launch.launcher == "deepspeed":
        master = launch.master_addr or hosts(launch.hostfile)[0][0]
        return [_tool("deepspeed"), "--hostfile", str(launch.hostfile), "--master_addr", master,
                "--master_port", str(launch.master_port), "--module", module, *args]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(launch.nproc_per_node)]
    if launch.launcher == "slurm":
        # one torchrun per node; they meet at the first node of the allocation
        master = launch.master_addr or _first_slurm_node()
        return ["srun", "--ntasks-per-node=1", *torchrun, *_rendezvous(os.environ.get("SLURM_JOB_NUM_NODES", "1"),
                master, launch.master_port, os.environ.get("SLURM_JOB_ID", "llm-lifecycle")), "-m", module, *args]
    if launch.nnodes > 1:
        return [*torchrun, *_rendezvous(str(launch.nnodes), launch.master_addr, launch.master_port, "llm-lifecycle"),
                "-m", module, *args]
    return [*torchrun, "--standalone", "-m", module, *args]  # --standalone picks a free port itself


def _rendezvous(nnodes: str, master: str, port: int, job_id: str) -> list[str]:
    """torchrun's arguments to meet the other nodes: the agent on `master` hosts the c10d store (it recognises
    its own hostname or address) and the others connect to it. Node ranks follow the nodes' names sorted (the first
    gets ranks 0..nproc-1), and the ranks' MASTER_ADDR is that node's name: every node's hostname must resolve,
    on every node, to the address the others reach it at."""
    return ["--nnodes", nnodes, "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{master}:{port}", "--rdzv_id", job_id]


def world_size(launch: LaunchParams) -> int:
    if launch.launcher == "deepspeed":
        return sum(slots for _, slots in hosts(launch.hostfile))
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) if launch.launcher == "slurm" else launch.nnodes
    return nodes * launch.nproc_per_node


def _tool(name: str) -> str:
    """A console script of this environment (next to its python), else from PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def _first_slurm_node() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST")
    if not nodes:
        raise ValueError("launcher 'slurm' runs inside an allocation (sbatch/salloc): SLURM_JOB_NODELIST is unset")
    import subprocess

    return subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux). torchrun starts each rank in a
    session of its own, so killing the launcher (kill -9, a cancelled flow, a lost node's scheduler) would
    otherwise leave ranks training on, and writing checkpoints, as orphans. Also usable as a Popen
    `preexec_fn`, for the launcher itself."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
