"""Ranking models from pairwise votes the way Chatbot Arena does (Chiang et al. 2024; FastChat's `compute_bt`).

Each vote is one row of a logistic regression: the design matrix has +1 in the column of the model on side A,
-1 in the column of the model on side B, and the label is 1 when A won. The coefficients β are the
Bradley-Terry strengths, P(A beats B) = σ(β_A − β_B), reported on the Elo scale: 1000 + 400/ln 10 · β (a
400-point gap is 10:1 odds). Ties count as half a win for each side (label 0.5: the same as FastChat's two
copies of a tied row, one won by each side), and so do "both bad" votes, as Chatbot Arena counts them.

The fit is Newton's method on the votes aggregated per (A, B, outcome), with a ridge of 1e-6: negligible
beside any real vote count, it only keeps the scores finite and centred (mean β = 0, so the average score is
1000) when a model has won or lost every one of its votes, where the plain maximum-likelihood score does not
exist. 95% intervals come from the bootstrap over votes (resampled with replacement, FastChat's multinomial
form), the 2.5th and 97.5th percentiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, log_expit

VOTES = ("a", "b", "tie", "both_bad")
OUTCOME = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}  # the label: how much of a win side A got
SCALE = 400 / math.log(10)  # Elo points per unit of β
BASE_SCORE = 1000
RIDGE = 1e-6
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class Leaderboard:
    table: pd.DataFrame  # one row per model, best first: score, lower, upper, votes, wins, losses, ties
    win_rate: pd.DataFrame  # row model's share of wins over column model, tied votes left out (NaN: no decisive vote)
    battles: pd.DataFrame  # votes between row and column model, both sides

    @property
    def total_votes(self) -> int:
        return int(self.battles.to_numpy().sum() // 2)


def bradley_terry(votes: pd.DataFrame, ridge: float = RIDGE) -> pd.Series:
    """Elo-scale scores of the models in `votes` (columns model_a, model_b, vote), best first."""
    models, rows = _aggregate(votes)
    beta = _fit(rows, len(models), rows["weight"], ridge)
    return pd.Series(_elo(beta), index=models).sort_values(ascending=False)


def bootstrap_intervals(votes: pd.DataFrame, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
                        ridge: float = RIDGE) -> pd.DataFrame:
    """The 95% bootstrap interval (columns lower, upper) of each model's score: the votes resampled with
    replacement `rounds` times, each resample refitted."""
    models, rows = _aggregate(votes)
    total = int(rows["weight"].sum())
    resampled = np.random.default_rng(seed).multinomial(total, rows["weight"] / total, size=rounds)
    scores = np.array([_elo(_fit(rows, len(models), weights, ridge)) for weights in resampled])
    return pd.DataFrame({"lower": np.percentile(scores, 2.5, axis=0), "upper": np.percentile(scores, 97.5, axis=0)},
                        index=models)


def leaderboard(votes: pd.DataFrame, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> Leaderboard:
    """Scores with their intervals, vote tallies, the win-rate and battle-count matrices."""
    if votes.empty:
        empty = pd.DataFrame(columns=["score", "lower", "upper", "votes", "wins", "losses", "ties"])
        return Leaderboard(empty, pd.DataFrame(), pd.DataFrame())
    scores = bradley_terry(votes)
    table = pd.concat([scores.rename("score"), bootstrap_intervals(votes, rounds, seed), _tallies(votes)], axis=1)
    order = list(scores.index)
    wins, battles = pair_matrices(votes, order)
    decisive = wins + wins.T
    win_rate = (wins / decisive.where(decisive > 0)).rename_axis(index="model", columns="opponent")
    return Leaderboard(table.loc[order].rename_axis("model"), win_rate, battles)


def win_probability(score: float, other: float) -> float:
    """P(a model scored `score` beats one scored `other`), ties aside: the Elo curve."""
    return float(expit((score - other) / SCALE))


def _aggregate(votes: pd.DataFrame) -> tuple[list[str], dict[str, np.ndarray]]:
    """The models, and the distinct (A index, B index, outcome) rows with how many votes each has."""
    unknown = set(votes["vote"]) - set(VOTES)
    if unknown:
        raise ValueError(f"unknown vote(s) {sorted(unknown)}; votes are {', '.join(VOTES)}")
    models = sorted(set(votes["model_a"]) | set(votes["model_b"]))
    index = {model: i for i, model in enumerate(models)}
    rows = (votes.assign(a=votes["model_a"].map(index), b=votes["model_b"].map(index),
                         outcome=votes["vote"].map(OUTCOME))
            .groupby(["a", "b", "outcome"]).size().reset_index(name="weight"))
    return models, {column: rows[column].to_numpy() for column in ("a", "b", "outcome", "weight")}


def _fit(rows: dict[str, np.ndarray], n_models: int, weights: np.ndarray, ridge: float) -> np.ndarray:
    """β minimising the weighted logistic loss + ridge/2·|β|², by Newton's method with step halving."""
    a, b, outcome = rows["a"], rows["b"], rows["outcome"]
    weights = np.asarray(weights, dtype=float)

    def loss(beta: np.ndarray) -> float:
        logit = beta[a] - beta[b]
        return float(-(weights * (outcome * log_expit(logit) + (1 - outcome) * log_expit(-logit))).sum()
                     + ridge / 2 * beta @ beta)

    beta = np.zeros(n_models)
    for _ in range(100):
        p = expit(beta[a] - beta[b])
        residual, curvature = weights * (p - outcome), weights * p * (1 - p)
        gradient = np.bincount(a, residual, n_models) - np.bincount(b, residual, n_models) + ridge * beta
        cells = np.concatenate([a * n_models + a, b * n_models + b, a * n_models + b, b * n_models + a])
        hessian = np.bincount(cells, np.concatenate([curvature, curvature, -curvature, -curvature]),
                              n_models * n_models).reshape(n_models, n_models) + ridge * np.eye(n_models)
        step = np.linalg.solve(hessian, gradient)
        before = loss(beta)
        while loss(beta - step) > before and np.abs(step).max() > 1e-12:  # keep the loss falling
            step /= 2
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def _elo(beta: np.ndarray) -> np.ndarray:
    return BASE_SCORE + SCALE * beta


def _tallies(votes: pd.DataFrame) -> pd.DataFrame:
    """Per model: votes it was in, wins, losses and ties ("both bad" counts as a tie)."""
    sides = [(votes["model_a"], votes["vote"].map({"a": "wins", "b": "losses"})),
             (votes["model_b"], votes["vote"].map({"b": "wins", "a": "losses"}))]
    long = pd.concat([pd.DataFrame({"model": model, "result": result.fillna("ties")}) for model, result in sides])
    counts = long.groupby(["model", "result"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=["wins", "losses", "ties"], fill_value=0)
    return counts.assign(votes=counts.sum(axis=1))[["votes", "wins", "losses", "ties"]]


def pair_matrices(votes: pd.DataFrame, models: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """wins[i, j]: decisive votes model i won against model j; battles[i, j]: all votes between them."""
    def matrix(rows: pd.Series, columns: pd.Series) -> pd.DataFrame:
        return pd.crosstab(rows, columns).reindex(index=models, columns=models, fill_value=0).rename_axis(
            index=None, columns=None)

    battles = matrix(votes["model_a"], votes["model_b"])
    decisive = votes[votes["vote"].isin(["a", "b"])]
    a_won = decisive["vote"] == "a"
    winners = decisive["model_a"].where(a_won, decisive["model_b"])
    losers = decisive["model_b"].where(a_won, decisive["model_a"])
    return matrix(winners, losers), battles + battles.T


def score_rows(votes: pd.DataFrame, models: dict[str, str], rounds: int = BOOTSTRAP_ROUNDS) -> list[dict]:
    """The leaderboard as report-card rows (measure `arena_elo`): one per contestant that `models` maps to the
    report's model names (`{"llm-lifecycle-sft/3": "sft"}`), with its bootstrap interval; the chance line is the
    base score, what a model that wins as often as it loses gets."""
    import hashlib

    board = leaderboard(votes, rounds)
    votes_digest = hashlib.sha256(votes.to_csv(index=False).encode()).hexdigest()[:16]
    return [{"model": models[name], "measure": "arena_elo", "task": "arena", "value": float(row.score),
             "ci_low": float(row.lower), "ci_high": float(row.upper), "interval": "bootstrap",
             "chance": float(BASE_SCORE), "n": int(row.votes), "formulation": "", "shots": None, "subset": "all",
             "prompt_digest": "", "items_digest": votes_digest,
             "note": "Bradley-Terry on the arena's votes, Elo scale; people's own prompts"}
            for name, row in board.table.iterrows() if name in models]
