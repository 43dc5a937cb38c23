"""What every training stage shares (pretrain, sft and the post-training stages after them): the run key that
names a run's checkpoint folder, the launch of the ranks with their metrics followed into MLflow, the
lineage tags of a registered model, and the clean-up of superseded checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from components.storage import code_digest, file_md5
from components.train import TrainConfig
from components.train.launch import LaunchParams, command, die_with_parent, world_size
from components.train.params import METRICS
from tasks import tracking

ROOT = Path(__file__).resolve().parents[1]
TRAINING_CODE = ("components/train", "components/model")  # what the run key hashes, besides params and data


# Settings that change what is logged or kept, not the weights: a run may resume under different values.
OBSERVATION_FIELDS = {"ckpt_dir", "token_dir", "tokenizer_dir", "on_metrics", "step_pause_s", "log_every",
                      "val_every", "val_batches", "ckpt_every", "keep_last", "peak_flops"}


def run_key(cfg: TrainConfig, token_dir: Path, world: int) -> str:
    """Names the checkpoint folder: equal exactly when a run may resume another's checkpoints. The number of
    ranks is part of it: it sets the global batch, and DeepSpeed cannot load ZeRO shards across sizes."""
    sha = hashlib.sha256(cfg.model_dump_json(exclude=OBSERVATION_FIELDS).encode() + f"world={world}".encode())
    sha.update(file_md5(token_dir / "manifest.json").encode())  # the manifest lists every shard's md5
    sha.update(code_digest(ROOT, TRAINING_CODE).encode())
    if cfg.init_from:  # fine-tuning: the starting weights decide the result as much as the data
        sha.update(folder_digest(Path(cfg.init_from)).encode())
    return f"run-{sha.hexdigest()[:16]}"


def launch_ranks(launch: LaunchParams, config_files: list[Path], follow: TrainConfig | None = None) -> None:
    """Start the ranks on the configs (trained in turn) and wait. Their output goes to this process's log;
    with `follow`, that run's metrics go to MLflow as they come."""
    cmd = command(launch, "components.train.run", *map(str, config_files))
    print(f"launching {world_size(launch)} rank(s): {' '.join(cmd)}", flush=True)
    follower = _MetricsFollower(follow.ckpt_dir / METRICS, follow.steps) if follow else None
    if follower:
        follower.start()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, preexec_fn=die_with_parent, stdout=sys.stdout, stderr=sys.stderr)
    finally:
        if follower:
            follower.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"training exited with {proc.returncode} (its output is above); a rerun resumes from "
                           "the newest checkpoint of each run")


class _MetricsFollower(threading.Thread):
    """Tails rank 0's metrics.jsonl: every new row to MLflow (with its step) and one progress line to the log."""

    def __init__(self, path: Path, steps: int):
        super().__init__(daemon=True)
        self.path, self.steps, self.offset = path, steps, path.stat().st_size if path.exists() else 0
        self.stage_run, self.done = tracking.current_stage_run(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(2.0):
            self.follow()
        self.follow()

    def stop(self) -> None:
        self.done.set()
        self.join()

    def follow(self) -> None:
        if not self.path.exists():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            lines = f.readlines()
        complete = [line for line in lines if line.endswith("\n")]  # a line being written waits for next time
        self.offset += sum(len(line.encode()) for line in complete)
        for row in map(json.loads, complete):
            step = row.pop("step")
            self.stage_run.log_metrics(row, step=step)
            shown = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
            print(f"step {step}/{self.steps}  {shown}", flush=True)


def forget_superseded(ckpt_dir: Path) -> None:
    """Delete checkpoints of earlier configurations: the published model supersedes them, and at scale each
    set is terabytes. The current run's stay, so it can be continued."""
    for other in ckpt_dir.parent.glob("run-*"):
        if other != ckpt_dir and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def dvc_md5(ws, upstream: str, path: str) -> str:
    """The md5 dvc.lock records for `path` as `upstream`'s output: the version of the data that was read."""
    outs = ws.lock_entry(upstream).get("outs", [])
    return next((out.get("md5", "") for out in outs if out["path"] == path), "")


def folder_digest(folder: Path) -> str:
    """md5 over a model folder's files (names and contents): equal exactly when the weights, config and
    tokenizer are."""
    digest = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_md5(path)}\0".encode())
    return digest.hexdigest()


def input_tags(ws, spec) -> dict[str, str]:
    """`llm.input.<path>`: the DVC md5 of each input the stage read, as tags for a registered model version."""
    return {f"input.{path}": dvc_md5(ws, up, path) for up, path in spec.inputs().items()}
