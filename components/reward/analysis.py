"""A reward model's held-out report: pairwise accuracy with a bootstrap interval and the chance line, the
distribution of reward gaps, accuracy by reply-length difference, and calibration.

Length is the lecture's warning: a reward model that mostly prefers the longer reply will teach the policy to
ramble. Accuracy is therefore also reported separately for pairs where the chosen reply is the longer one and
pairs where it is the shorter one: a model that only learned "longer is better" scores high on the first
group and below chance on the second. Calibration compares σ(gap), the model's own probability that the
chosen reply wins, with how often it does, in bins.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from components.evaluate.stats import bootstrap
from components.model.load import load_pretrained

CHANCE = 0.5  # a coin picks the chosen reply half the time


@torch.no_grad()
def score_pairs(model_dir: Path, pairs, pad_id: int, batch_size: int = 16) -> pd.DataFrame:
    """Rewards of every pair's chosen and rejected reply under the reward model folder (loaded by
    transformers alone), with the replies' token lengths."""
    from transformers import AutoModelForSequenceClassification

    model = load_pretrained(AutoModelForSequenceClassification, model_dir).eval()
    rows = []
    for first in range(0, len(pairs), batch_size):
        index = np.arange(first, min(first + batch_size, len(pairs)))
        batch = pairs.take(index, pad_id)
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        chosen, rejected = rewards.double().numpy().reshape(2, -1)
        for k, i in enumerate(index):
            rows.append({"pair": int(i), "chosen": chosen[k], "rejected": rejected[k],
                         "chosen_tokens": int(pairs.chosen_mask[i].sum()),
                         "rejected_tokens": int(pairs.rejected_mask[i].sum())})
    return pd.DataFrame(rows)


def analyse(scores: pd.DataFrame, bins: int = 5) -> dict:
    """The report's numbers: {metrics: flat floats for MLflow, by_length: table, calibration: table}."""
    gap = (scores["chosen"] - scores["rejected"]).to_numpy()
    correct = (gap > 0).astype(float)
    low, high = bootstrap(correct) if len(correct) else (float("nan"), float("nan"))
    longer = scores["chosen_tokens"] > scores["rejected_tokens"]
    shorter = scores["chosen_tokens"] < scores["rejected_tokens"]
    metrics = {"accuracy": float(correct.mean()), "accuracy_low": low, "accuracy_high": high, "chance": CHANCE,
               "pairs": float(len(gap)), "mean_gap": float(gap.mean()),
               "accuracy_chosen_longer": float(correct[longer].mean()) if longer.any() else float("nan"),
               "accuracy_chosen_shorter": float(correct[shorter].mean()) if shorter.any() else float("nan"),
               "prefers_longer": float(((scores["chosen"] > scores["rejected"]) == longer)[longer | shorter].mean())
               if (longer | shorter).any() else float("nan")}
    length_gap = (scores["chosen_tokens"] - scores["rejected_tokens"]).to_numpy()
    bucket = pd.Series(pd.qcut(length_gap, q=min(bins, len(np.unique(length_gap))), duplicates="drop"),
                       name="chosen minus rejected tokens")
    by_length = pd.Series(correct, name="accuracy").groupby(bucket, observed=True).agg(["mean", "count"]).reset_index()
    probability = 1 / (1 + np.exp(-gap))
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probability, edges) - 1, 0, bins - 1)
    calibration = pd.DataFrame({"bin": which, "predicted": probability, "won": correct}).groupby("bin").agg(
        predicted=("predicted", "mean"), observed=("won", "mean"), count=("won", "size")).reset_index()
    metrics["calibration_error"] = float((calibration["count"] * (calibration["predicted"] - calibration["observed"])
                                          .abs()).sum() / len(gap))
    return {"metrics": metrics, "by_length": by_length, "calibration": calibration}


def plot_analysis(scores: pd.DataFrame, analysis: dict, path: Path) -> Path:
    """Reward gaps, accuracy by length difference with the chance line, and calibration, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (gaps, lengths, calib) = plt.subplots(1, 3, figsize=(15, 4))
    gap = scores["chosen"] - scores["rejected"]
    gaps.hist(gap, bins=30, color="#4477aa")
    gaps.axvline(0, color="black", linestyle="--")
    gaps.set(xlabel="r(chosen) − r(rejected)", ylabel="pairs", title="held-out reward gaps (right of 0: correct)")
    table = analysis["by_length"]
    lengths.bar(range(len(table)), table["mean"], color="#ee6677")
    lengths.axhline(CHANCE, color="black", linestyle="--", label="chance")
    lengths.set_xticks(range(len(table)), [str(i) for i in table.iloc[:, 0]], rotation=30, fontsize=7)
    lengths.set(ylim=(0, 1), xlabel="chosen minus rejected reply tokens", ylabel="accuracy",
                title="accuracy by length difference")
    lengths.legend()
    cal = analysis["calibration"]
    calib.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    calib.plot(cal["predicted"], cal["observed"], "o-", color="#228833", label="model")
    calib.set(xlabel="σ(gap): predicted P(chosen wins)", ylabel="observed", title="calibration", xlim=(0, 1),
              ylim=(0, 1))
    calib.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def score_replies(model_dir: Path, conversations: list[list[dict]], batch_size: int = 16) -> np.ndarray:
    """The reward model's score of each conversation's last (assistant) reply, rendered as its training pairs
    were: the chat template, then end-of-text right after the last stop token."""
    from transformers import AutoModelForSequenceClassification

    from components.sft_data.chat import encode, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_pretrained(AutoModelForSequenceClassification, model_dir).eval()
    rows = [encode(tokenizer, turns).input_ids for turns in conversations]
    scores = []
    for first in range(0, len(rows), batch_size):
        batch = rows[first:first + batch_size]
        width = max(len(row) for row in batch)
        ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in batch])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch])
        scores += model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).double().tolist()
    return np.asarray(scores)
