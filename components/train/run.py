"""Entry point of one training rank: `python -m components.train.run CFG.json [CFG.json ...]` under a launcher
(`components.train.launch.command`).

CFG.json holds `TrainConfig`'s fields; several are trained one after another (a scaling sweep). Rank 0 appends every logged row to `ckpt_dir/metrics.jsonl` (a resumed
run appends too: when a step appears twice, the later line is the one that counted), and at the end writes
`ckpt_dir/result.json` and prints it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from components.train.engine import train
from components.train.launch import die_with_parent
from components.train.params import METRICS, RESULT, TrainConfig


def main(*config_paths: str) -> list[dict]:
    """Train each config in turn in one process group: a sweep of small runs pays the launch once."""
    die_with_parent()
    results = [_train_one(TrainConfig(**json.loads(Path(path).read_text()))) for path in config_paths]
    dist.destroy_process_group()
    return results


def _train_one(cfg: TrainConfig) -> dict:
    metrics = Path(cfg.ckpt_dir) / METRICS

    def log(row: dict) -> None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        with open(metrics, "a") as f:  # one line per call, flushed: a kill loses at most the step in flight
            f.write(json.dumps(row) + "\n")

    result = train(cfg.model_copy(update={"on_metrics": log}))
    if dist.get_rank() == 0:
        (Path(cfg.ckpt_dir) / RESULT).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: torchrun ... -m components.train.run CONFIG.json [CONFIG.json ...]")
    main(*sys.argv[1:])
