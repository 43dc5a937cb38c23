"""Entry point of one training rank: `torchrun --standalone --nproc_per_node N -m components.train.run CFG.json`.

CFG.json holds `TrainConfig`'s fields. Rank 0 appends every logged step to `ckpt_dir/metrics.jsonl` (a resumed
run appends too: when a step appears twice, the later line is the one that counted) and prints the result.
"""
from __future__ import annotations

import ctypes
import json
import signal
import sys
from pathlib import Path

import torch.distributed as dist

from components.train.engine import TrainConfig, train

METRICS = "metrics.jsonl"


def die_with_parent() -> None:
    """torchrun starts each rank in a session of its own, so killing the launcher's process group (kill -9,
    a lost node's scheduler) would leave the ranks training on, and writing checkpoints, as orphans. On Linux
    ask the kernel to kill this rank when its parent dies."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(config_path: str) -> dict:
    die_with_parent()
    fields = json.loads(Path(config_path).read_text())
    cfg = TrainConfig(**fields)
    metrics = Path(cfg.ckpt_dir) / METRICS

    def log(row: dict) -> None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        with open(metrics, "a") as f:  # one line per call, flushed: a kill loses at most the step in flight
            f.write(json.dumps(row) + "\n")

    result = train(cfg.model_copy(update={"on_metrics": log}))
    if dist.get_rank() == 0:
        print(json.dumps(result), flush=True)
    dist.destroy_process_group()
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: torchrun ... -m components.train.run CONFIG.json")
    main(sys.argv[1])
