"""Which two models the next round puts side by side.

Every pair can come up, but not equally often: a pair is drawn with weight 4·p·(1−p) / (1 + n), where p is
the chance one beats the other under the current scores and n the votes the pair already has. The first
factor is the information a vote carries (1 for an even pair, near 0 for a foregone one), the second spreads
votes over the pairs with the fewest. The sides are a fair coin, so neither model sits on side A more often.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from components.arena.ranking import BASE_SCORE, win_probability


def pair_weights(models: list[str], scores: pd.Series, battles: pd.DataFrame) -> dict[tuple[str, str], float]:
    """The draw weight of each pair of `models`. `scores` and `battles` (ranking.leaderboard's) may lack models
    that have no votes yet: they count as scored BASE_SCORE with no votes."""
    weights = {}
    for first, second in combinations(models, 2):
        p = win_probability(scores.get(first, BASE_SCORE), scores.get(second, BASE_SCORE))
        votes = battles.at[first, second] if first in battles.index and second in battles.columns else 0
        weights[(first, second)] = 4 * p * (1 - p) / (1 + votes)
    return weights


def choose_pair(models: list[str], scores: pd.Series, battles: pd.DataFrame,
                rng: np.random.Generator) -> tuple[str, str]:
    """(model on side A, model on side B) for a new round."""
    if len(set(models)) < 2:
        raise ValueError(f"an arena needs two models or more, got {models}")
    weights = pair_weights(models, scores, battles)
    pairs = list(weights)
    chosen = pairs[rng.choice(len(pairs), p=np.array(list(weights.values())) / sum(weights.values()))]
    return chosen if rng.random() < 0.5 else chosen[::-1]
