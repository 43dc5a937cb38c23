"""The leaderboard as a figure: each model's score with its 95% interval, and the win-rate matrix."""
from __future__ import annotations

import numpy as np

from components.arena.ranking import BASE_SCORE, Leaderboard


def leaderboard_figure(board: Leaderboard):
    import matplotlib

    matplotlib.use("Agg")  # no display: the figure goes to a file or to MLflow
    import matplotlib.pyplot as plt

    table = board.table.iloc[::-1]  # best at the top
    figure, (scores, rates) = plt.subplots(1, 2, figsize=(12, 1.5 + 0.5 * len(table)), constrained_layout=True)
    errors = np.array([table["score"] - table["lower"], table["upper"] - table["score"]])
    scores.errorbar(table["score"], range(len(table)), xerr=errors, fmt="o", capsize=4)
    scores.axvline(BASE_SCORE, color="grey", linewidth=0.8, linestyle=":")
    scores.set_yticks(range(len(table)), [f"{model} ({votes} votes)" for model, votes in table["votes"].items()])
    scores.set_xlabel("Bradley-Terry score, Elo scale (95% bootstrap interval)")
    image = rates.imshow(board.win_rate.to_numpy(dtype=float), vmin=0, vmax=1, cmap="RdBu")
    rates.set_xticks(range(len(board.win_rate)), board.win_rate.columns, rotation=30, ha="right")
    rates.set_yticks(range(len(board.win_rate)), board.win_rate.index)
    rates.set_title("share of decisive votes the row model won")
    figure.colorbar(image, ax=rates)
    return figure
