"""Scaling laws from an isoFLOP sweep: Hoffmann et al. 2022 ("Chinchilla"), approaches 2 and 3.

The input has one row per trained model: `budget` (FLOPs C), `params` (N), `tokens` (D, with 6·N·D ≈ C;
C / 6N when the column is absent) and `loss` (the final validation loss): a pandas DataFrame, or anything
`pd.DataFrame` accepts.

Approach 2 (`fit_isoflop`, `fit_power_law`): per budget, a parabola of loss in ln N and its minimum
N_opt(C), D_opt(C) = C / 6·N_opt; then N_opt = n_coefficient·C^a and D_opt = d_coefficient·C^b in log-log.
Approach 3 (`fit_loss_law`): L(N, D) = E + A/N^alpha + B/D^beta fitted to every point.

A budget whose parabola has its minimum outside the sizes tried is flagged (`extrapolated`), not refused:
the minimum of a parabola is a guess beyond the data, so the power laws leave such budgets out, unless
fewer than 2 budgets remain, and then use them all; either way `warnings` says which and what to do.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from components.planner import ScalingLaw

# Hoffmann et al. 2022, appendix D.2: Huber loss (delta 1e-3) of log-space residuals, minimised with L-BFGS
# from a grid of initialisations: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}.
HUBER_DELTA = 1e-3
_AXES = [np.arange(0, 26, 5.0), np.arange(0, 26, 5.0), np.arange(-1, 1.01, 0.5), np.arange(0, 2.01, 0.5),
         np.arange(0, 2.01, 0.5)]
GRID = np.stack(np.meshgrid(*_AXES, indexing="ij"), axis=-1).reshape(-1, 5)  # rows: a, b, e, alpha, beta
# L-BFGS runs from the best grid points only: the objective is cheap on the whole grid at once, and the
# 4,500 runs of the paper would take a minute; the best few reach the same optimum.
STARTS = 8
# SciPy's L-BFGS-B (C since 1.15) makes tiny LAPACK calls that a multi-threaded OpenBLAS turns 20-50x slower
# on a busy machine (scipy/scipy#22438): the fits run with one BLAS thread. (threadpoolctl: scikit-learn's.)
_ONE_BLAS_THREAD = threadpool_limits.wrap(limits=1, user_api="blas")
MIN_SIZES = 3  # a parabola through fewer points has no fitted minimum
MIN_LOSS_POINTS = 5  # five parameters
QUANTITIES = ["a", "n_coefficient", "b", "d_coefficient", "E", "A", "B", "alpha", "beta"]


class ScalingFitError(ValueError):
    """A sweep the laws cannot be fitted to; the message says why and what to add to the sweep."""


class PowerLaw(NamedTuple):
    coefficient: float
    exponent: float


class LossLaw(NamedTuple):
    E: float
    A: float
    B: float
    alpha: float
    beta: float


class _Points(NamedTuple):
    budget: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray

    def take(self, index: np.ndarray) -> "_Points":
        return _Points(*(column[index] for column in self))


def as_points(points) -> _Points:
    """The points as float columns, refused unless budget, params and loss are there and all positive."""
    frame = pd.DataFrame(points)
    missing = {"budget", "params", "loss"} - set(frame.columns)
    if missing:
        raise ScalingFitError(f"the points lack the columns {sorted(missing)}: need budget, params, loss (and tokens)")
    if frame.empty:
        raise ScalingFitError("no points: run the sweep first")
    if "tokens" not in frame:
        frame["tokens"] = frame["budget"] / (6 * frame["params"])
    columns = [frame[name].to_numpy(dtype=float) for name in _Points._fields]
    for name, column in zip(_Points._fields, columns):
        bad = ~(np.isfinite(column) & (column > 0))
        if bad.any():
            raise ScalingFitError(f"column {name} must be finite and positive: row {np.flatnonzero(bad)[0]} "
                                  f"is {column[bad][0]}")
    return _Points(*columns)


def flops_label(x: float) -> str:
    return f"{x:.3g}".replace("e+", "e")


def fit_isoflop(points) -> list[dict]:
    """Per budget (ascending): {budget, sizes, parabola, params_range, params_opt, tokens_opt, loss_opt, extrapolated}.

    `parabola` = [c2, c1, c0] of loss = c2·(ln N)² + c1·ln N + c0; `sizes` the distinct N tried, within
    `params_range` = [min, max]; `extrapolated` when params_opt lies outside that range."""
    return _fit_isoflop(as_points(points))


def _fit_isoflop(p: _Points) -> list[dict]:
    fits = []
    for budget in np.unique(p.budget):
        at = p.budget == budget
        params, loss = p.params[at], p.loss[at]
        sizes = len(np.unique(params))
        if sizes < MIN_SIZES:
            raise ScalingFitError(f"budget {flops_label(budget)} has {sizes} model size{'s' * (sizes != 1)}; "
                                  f"an isoFLOP parabola needs at least {MIN_SIZES}: add sizes to the sweep")
        c2, c1, c0 = np.polyfit(np.log(params), loss, 2)
        if c2 <= 0:
            raise ScalingFitError(f"budget {flops_label(budget)}: the loss is not convex in ln N (the parabola opens "
                                  "downward, no minimum): widen the range of sizes or add sizes to the sweep")
        log_opt = -c1 / (2 * c2)
        params_opt = float(np.exp(log_opt))
        fits.append({"budget": float(budget), "sizes": sizes, "parabola": [float(c2), float(c1), float(c0)],
                     "params_range": [float(params.min()), float(params.max())], "params_opt": params_opt,
                     "tokens_opt": float(budget / (6 * params_opt)),
                     "loss_opt": float(np.polyval([c2, c1, c0], log_opt)),
                     "extrapolated": not params.min() <= params_opt <= params.max()})
    return fits


def fit_power_law(budgets, values) -> PowerLaw:
    """values = coefficient · budgets^exponent, least squares in log-log; needs 2 budgets (3 for an uncertainty)."""
    c, v = np.asarray(budgets, dtype=float), np.asarray(values, dtype=float)
    if c.shape != v.shape or not (np.all(c > 0) and np.all(v > 0)):
        raise ScalingFitError("a power law needs as many positive values as budgets")
    distinct = len(np.unique(c))
    if distinct < 2:
        raise ScalingFitError(f"a power law in C needs at least 2 budgets, got {distinct}: add budgets to the sweep")
    x, y = np.log(c), np.log(v)
    exponent, intercept = np.polyfit(x, y, 1)
    return PowerLaw(float(np.exp(intercept)), float(exponent))


@_ONE_BLAS_THREAD
def fit_loss_law(points) -> LossLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, approach 3); needs 5 points over 2 budgets."""
    return _fit_loss_law(as_points(points))


def _fit_loss_law(p: _Points, start: Optional[LossLaw] = None) -> LossLaw:
    """L-BFGS from the best grid points, or from `start` alone (the bootstrap's resamples start at the estimate)."""
    budgets = len(np.unique(p.budget))
    if len(p.loss) < MIN_LOSS_POINTS or budgets < 2:
        raise ScalingFitError(f"the loss law has 5 parameters: it needs at least {MIN_LOSS_POINTS} points over 2 "
                              f"budgets, got {len(p.loss)} over {budgets}: add sizes or budgets to the sweep")
    x = (np.log(p.params), np.log(p.tokens), np.log(p.loss))
    if start is None:
        starts = GRID[np.argsort(_objective(GRID, *x))[:STARTS]]
    else:
        starts = [np.log([start.A, start.B, start.E]).tolist() + [start.alpha, start.beta]]
    best = min((minimize(_objective_and_gradient, theta, args=x, method="L-BFGS-B", jac=True) for theta in starts),
               key=lambda result: result.fun)
    a, b, e, alpha, beta = best.x
    if alpha <= 0 or beta <= 0:
        raise ScalingFitError(f"the fitted loss does not fall with both N and D (alpha {alpha:.3g}, beta {beta:.3g}): "
                              "the sweep is too noisy or too narrow; add budgets or sizes")
    return LossLaw(float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), float(alpha), float(beta))


def _terms(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """The log-terms of the LSE form, log L̂ = LSE(a − alpha·ln N, b − beta·ln D, e): shape (3, ..., points)."""
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    return np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e))


def _huber(r: np.ndarray) -> np.ndarray:
    return np.where(np.abs(r) <= HUBER_DELTA, 0.5 * r**2, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA))


def _lse(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log Σ exp over the terms, and the softmax weights (its gradient): one exp for both, the fit's hot loop."""
    top = terms.max(axis=0)
    exp = np.exp(terms - top)
    total = exp.sum(axis=0)
    return top + np.log(total), exp / total


# The objective is the mean Huber loss over δ²: the same minimum, at a scale (~ residual / δ) where L-BFGS's
# stopping tolerances, made for objectives of order 1, do not stop it at its first step.
def _objective(theta, log_n, log_d, log_loss) -> np.ndarray:
    return _huber(_lse(_terms(theta, log_n, log_d))[0] - log_loss).mean(axis=-1) / HUBER_DELTA**2


def _objective_and_gradient(theta, log_n, log_d, log_loss) -> tuple[float, np.ndarray]:
    terms = _terms(theta, log_n, log_d)
    log_fit, weights = _lse(terms)
    r = log_fit - log_loss
    dr = np.clip(r, -HUBER_DELTA, HUBER_DELTA) / (len(r) * HUBER_DELTA**2)  # d objective / d residual
    w = weights * dr  # d objective / d term
    gradient = [w[0].sum(), w[1].sum(), w[2].sum(), -(w[0] * log_n).sum(), -(w[1] * log_d).sum()]
    return float(_huber(r).mean() / HUBER_DELTA**2), np.array(gradient)


@_ONE_BLAS_THREAD
def fit_scaling_laws(points) -> dict:
    """Approaches 2 and 3 on one sweep: {isoflop, law, law_budgets, loss_law, warnings}.

    `isoflop`: `fit_isoflop`'s list; `law`: {a, b, n_coefficient, d_coefficient}, N_opt = n_coefficient·C^a
    and D_opt = d_coefficient·C^b (a `components.planner.ScalingLaw`, so `llm-lifecycle plan --law` reads
    it), fitted to the minima of `law_budgets`; `loss_law`: {E, A, B, alpha, beta}; `warnings`: strings."""
    return _fit(as_points(points))


def _fit(p: _Points, start: Optional[LossLaw] = None) -> dict:
    isoflop = _fit_isoflop(p)
    inside = [f for f in isoflop if not f["extrapolated"]]
    used = inside if len(inside) >= 2 else isoflop
    budgets = [f["budget"] for f in used]
    n_opt = fit_power_law(budgets, [f["params_opt"] for f in used])
    d_opt = fit_power_law(budgets, [f["tokens_opt"] for f in used])
    return {"isoflop": isoflop,
            "law": {"a": n_opt.exponent, "b": d_opt.exponent,
                    "n_coefficient": n_opt.coefficient, "d_coefficient": d_opt.coefficient},
            "law_budgets": budgets, "loss_law": _fit_loss_law(p, start)._asdict(),
            "warnings": _warnings(isoflop, used)}


def _warnings(isoflop: list[dict], used: list[dict]) -> list[str]:
    notes = []
    for f in (f for f in isoflop if f["extrapolated"]):
        low, high = f["params_range"]
        side = "larger" if f["params_opt"] > high else "smaller"
        fate = "used anyway: fewer than 2 budgets have theirs inside" if f in used else "left out of the power laws"
        notes.append(f"budget {flops_label(f['budget'])}: the optimum ({f['params_opt']:.3g} params) is outside "
                     f"the sizes tried ({low:.3g}-{high:.3g}), {fate}: extend the sweep toward {side} models")
    if len(used) == 2:
        notes.append("the power laws are lines through 2 budgets: add budgets for a meaningful uncertainty")
    return notes


@_ONE_BLAS_THREAD
def bootstrap(points, n: int = 200, seed: int = 0) -> dict:
    """Resample the points with replacement within each budget, refit, report every fitted quantity.

    {n, seed, failed, estimates: {name: {estimate, stderr, low, high}}, samples: {name: [...]}}: `estimate`
    is the fit to all points, `low`-`high` the 5th-95th percentiles (a 90% interval); resamples that cannot
    be fitted (say fewer than 3 distinct sizes drawn) are skipped and counted in `failed`."""
    p = as_points(points)
    fit = _fit(p)
    start = LossLaw(**fit["loss_law"])  # resamples start L-BFGS at the estimate: the same basin, 8x faster
    groups = [np.flatnonzero(p.budget == budget) for budget in np.unique(p.budget)]
    rng = np.random.default_rng(seed)
    samples, failed = [], 0
    for _ in range(n):
        index = np.concatenate([rng.choice(group, size=len(group)) for group in groups])
        try:
            samples.append(_quantities(_fit(p.take(index), start)))
        except ScalingFitError:
            failed += 1
    if len(samples) < 2:
        raise ScalingFitError(f"only {len(samples)} of {n} resamples could be fitted: add sizes to the sweep")
    values = np.array(samples)
    estimates = {name: {"estimate": estimate, "stderr": float(column.std(ddof=1)),
                        "low": float(np.percentile(column, 5)), "high": float(np.percentile(column, 95))}
                 for name, estimate, column in zip(QUANTITIES, _quantities(fit), values.T)}
    return {"n": n, "seed": seed, "failed": failed, "estimates": estimates,
            "samples": {name: column.tolist() for name, column in zip(QUANTITIES, values.T)}}


def _quantities(fit: dict) -> list[float]:
    merged = fit["law"] | fit["loss_law"]
    return [merged[name] for name in QUANTITIES]


def recommend(fits: dict, target_flops: float, boot: Optional[dict] = None) -> dict:
    """{params, tokens, tokens_per_param} at `target_flops` from the fitted N_opt and D_opt power laws; with
    `boot` (from `bootstrap`) also interval: {params, tokens, tokens_per_param: [5th, 95th percentile]}."""
    if not target_flops > 0:
        raise ScalingFitError(f"the target budget must be positive FLOPs, got {target_flops}")
    split = ScalingLaw.model_validate(fits["law"]).split(target_flops)
    if boot:
        split["interval"] = {name: [float(np.percentile(v, 5)), float(np.percentile(v, 95))]
                             for name, v in resample_splits(boot, target_flops).items()}
    return split


def resample_splits(boot: dict, flops) -> dict[str, np.ndarray]:
    """Each resample's N_opt and D_opt at `flops` (a number or an array): shape (resamples, *flops)."""
    s = {name: np.asarray(values)[:, None] for name, values in boot["samples"].items()}
    flops = np.atleast_1d(flops)[None, :]
    params, tokens = s["n_coefficient"] * flops ** s["a"], s["d_coefficient"] * flops ** s["b"]
    return {"params": params, "tokens": tokens, "tokens_per_param": tokens / params}
