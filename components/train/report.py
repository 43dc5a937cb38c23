"""The training run in pictures and a table: loss curves, validation bits per byte against the unigram
baseline, throughput; read from the rows rank 0 logged (`metrics.jsonl`)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def read_rows(metrics_file: Path) -> list[dict]:
    """The logged rows by step; when a resumed run logged a step again, its later row is the one that counted."""
    by_step: dict[int, dict] = {}
    for line in Path(metrics_file).read_text().splitlines():
        row = json.loads(line)
        by_step[row["step"]] = by_step.get(row["step"], {}) | row
    return [by_step[step] for step in sorted(by_step)]


def plot_training(rows: list[dict], path: Path, unigram_bpb: float | None = None,
                  decay_from: int | None = None) -> Path:
    """Training and validation loss and the learning rate over steps; validation bits per byte with the
    unigram baseline it must beat."""
    fig, (loss_ax, bpb_ax) = plt.subplots(1, 2, figsize=(12, 4))
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="#4477aa", label="train loss")
    loss_ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", color="#ee6677", label="val loss")
    if decay_from is not None:
        loss_ax.axvline(decay_from, color="grey", linestyle=":", label="LR decay, anneal data")
    loss_ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", title="loss")
    lr_ax = loss_ax.twinx()
    lr_ax.plot([r["step"] for r in train], [r["lr"] for r in train], color="#999933", alpha=0.5)
    lr_ax.set_ylabel("learning rate", color="#999933")
    loss_ax.legend(loc="upper right")
    with_bpb = [r for r in val if "val_bpb" in r]
    bpb_ax.plot([r["step"] for r in with_bpb], [r["val_bpb"] for r in with_bpb], "o-", color="#ee6677",
                label="model")
    if unigram_bpb is not None:
        bpb_ax.axhline(unigram_bpb, color="black", linestyle="--", label=f"unigram baseline {unigram_bpb:.3f}")
    bpb_ax.set(xlabel="step", ylabel="bits per byte", title="validation bits per byte")
    bpb_ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary(rows: list[dict]) -> dict[str, float]:
    """Final losses and the last validation's metrics, and throughput and MFU as medians (the first steps include
    warm-up and are slow)."""
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    out = {"final_train_loss": train[-1]["loss"]} if train else {}
    if val:  # the last validation: every objective's own held-out metrics (bits per byte, DPO's rewards/*, ...)
        out |= {key: value for key, value in val[-1].items() if key.startswith("val_")}
    for key in ("tokens_per_s", "mfu"):
        values = sorted(r[key] for r in train[1:] or train if key in r)
        if values:
            out[f"median_{key}"] = values[len(values) // 2]
    out["all_losses_finite"] = float(all(math.isfinite(r["loss"]) for r in train))
    return out
