"""Scaling-law fits: a sweep drawn from a known L(N, D) gives back its exponents, optimum and loss law; thin
sweeps are refused with what to add; an optimum outside the sizes tried is flagged and left out; plots."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components.planner import ScalingLaw
from components.scaling import (ScalingFitError, bootstrap, fit_isoflop, fit_loss_law, fit_power_law,
                                fit_scaling_laws, plot_isoflop, plot_power_laws, recommend)

# Close to Hoffmann et al. 2022's fit (E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28).
E, A, B, ALPHA, BETA = 1.7, 400.0, 410.0, 0.34, 0.28
TRUE_A, TRUE_B = BETA / (ALPHA + BETA), ALPHA / (ALPHA + BETA)
BUDGETS = [1e17, 3e17, 1e18, 3e18, 1e19]


def true_loss(n, d):
    return E + A / n**ALPHA + B / d**BETA


def true_params_opt(c):
    """Hoffmann et al. 2022, appendix D.2: N_opt = G·(C/6)^a, G = (alpha·A / (beta·B))^(1/(alpha+beta))."""
    return (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA)) * (c / 6) ** TRUE_A


def sweep(budgets=BUDGETS, spread=8.0, sizes=7, noise=0.003, seed=0, centre=1.0) -> pd.DataFrame:
    """Sizes log-spaced around the 20-tokens-per-parameter guess (not the true optimum, as in a real sweep)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        for n in centre * np.sqrt(c / 120) * np.geomspace(1 / spread, spread, sizes):
            d = c / (6 * n)
            rows.append({"budget": c, "params": n, "tokens": d,
                         "loss": true_loss(n, d) * np.exp(rng.normal(0, noise))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def points() -> pd.DataFrame:
    return sweep()


@pytest.fixture(scope="module")
def fits(points) -> dict:
    return fit_scaling_laws(points)


@pytest.fixture(scope="module")
def boot(points) -> dict:
    return bootstrap(points, n=200, seed=0)


def test_isoflop_minima_and_exponents_match_the_known_law(fits):
    for f in fits["isoflop"]:
        assert f["params_opt"] == pytest.approx(true_params_opt(f["budget"]), rel=0.2)
        assert 6 * f["params_opt"] * f["tokens_opt"] == pytest.approx(f["budget"])
        assert f["sizes"] == 7 and not f["extrapolated"]
    assert fits["law"]["a"] == pytest.approx(TRUE_A, abs=0.02)
    assert fits["law"]["b"] == pytest.approx(TRUE_B, abs=0.02)
    assert fits["law_budgets"] == BUDGETS and fits["warnings"] == []


def test_loss_law_recovers_the_parameters(points):
    law = fit_loss_law(points)
    assert law.alpha == pytest.approx(ALPHA, abs=0.02)
    assert law.beta == pytest.approx(BETA, abs=0.02)
    assert law.E == pytest.approx(E, abs=0.08)


def test_power_law_is_exact_on_a_power_law():
    coefficient, exponent = fit_power_law([1e18, 1e19, 1e20], [3 * c**0.5 for c in (1e18, 1e19, 1e20)])
    assert (coefficient, exponent) == (pytest.approx(3), pytest.approx(0.5))


def test_bootstrap_interval_contains_the_true_exponent_and_is_reproducible(points, boot):
    a = boot["estimates"]["a"]
    assert a["low"] < TRUE_A < a["high"]
    assert a["low"] < a["estimate"] < a["high"] and a["stderr"] > 0
    assert set(boot["estimates"]) == {"a", "b", "n_coefficient", "d_coefficient", "E", "A", "B", "alpha", "beta"}
    assert boot["n"] == 200 and len(boot["samples"]["a"]) == 200 - boot["failed"] > 180
    again = bootstrap(points, n=20, seed=0)["samples"]["a"]
    assert again == bootstrap(points, n=20, seed=0)["samples"]["a"]
    assert again != bootstrap(points, n=20, seed=1)["samples"]["a"]


def test_recommend_spends_the_target_budget(fits, boot):
    target = 1e22
    pick = recommend(fits, target, boot)
    assert 6 * pick["params"] * pick["tokens"] == pytest.approx(target, rel=1e-6)
    assert pick["params"] == pytest.approx(true_params_opt(target), rel=0.3)
    assert pick["tokens_per_param"] == pytest.approx(pick["tokens"] / pick["params"])
    for name in ("params", "tokens", "tokens_per_param"):
        low, high = pick["interval"][name]
        assert low < pick[name] < high
    assert "interval" not in recommend(fits, target)
    # The fitted law is the planner's: `llm-lifecycle plan --law` reads it back.
    assert ScalingLaw.model_validate(json.loads(json.dumps(fits["law"]))).split(target)["params"] == pick["params"]


def test_too_few_sizes_in_a_budget_names_the_budget():
    points = sweep()
    points = points[(points["budget"] != 1e17) | (points.index % 7 < 2)]
    with pytest.raises(ScalingFitError, match=r"budget 1e17 has 2 model sizes; .* at least 3: add sizes"):
        fit_isoflop(points)


def test_fewer_than_two_budgets_is_refused():
    with pytest.raises(ScalingFitError, match="at least 2 budgets, got 1: add budgets"):
        fit_scaling_laws(sweep(budgets=[1e18]))
    with pytest.raises(ScalingFitError, match="at least 2 budgets"):
        fit_power_law([1e18, 1e18], [1e8, 2e8])
    with pytest.raises(ScalingFitError, match="at least 5 points over 2 budgets, got 4"):
        fit_loss_law(sweep(budgets=[1e17, 1e18], sizes=2))


def test_a_parabola_without_minimum_is_refused():
    points = pd.DataFrame({"budget": 1e18, "params": [1e7, 1e8, 1e9], "loss": [3.0, 3.2, 3.0]})
    with pytest.raises(ScalingFitError, match="budget 1e18: .*opens downward"):
        fit_isoflop(points)


def test_bad_values_are_refused():
    with pytest.raises(ScalingFitError, match="column loss must be finite and positive"):
        fit_isoflop(pd.DataFrame({"budget": 1e18, "params": [1e7, 1e8, 1e9], "loss": [3.0, np.nan, 3.0]}))


def test_an_optimum_outside_the_sizes_tried_is_flagged_and_left_out(points, fits):
    small = sweep(budgets=[3e19], spread=2.0, sizes=5, centre=1 / 10)  # all well below the optimum
    both = fit_scaling_laws(pd.concat([points, small]))
    flagged = both["isoflop"][-1]
    assert flagged["budget"] == 3e19 and flagged["extrapolated"]
    assert flagged["params_opt"] > flagged["params_range"][1]
    assert both["law_budgets"] == BUDGETS and both["law"] == pytest.approx(fits["law"])
    assert len(both["warnings"]) == 1 and "extend the sweep toward larger models" in both["warnings"][0]


def test_with_two_budgets_left_the_extrapolated_ones_are_used_and_said_so():
    too_small = sweep(budgets=[1e19], spread=2.0, sizes=5, centre=1 / 10)
    fits = fit_scaling_laws(pd.concat([sweep(budgets=[1e17, 1e18]), too_small]))
    assert fits["law_budgets"] == [1e17, 1e18]  # two inside: the extrapolated one is left out
    fits = fit_scaling_laws(pd.concat([sweep(budgets=[1e17]), too_small]))
    assert fits["law_budgets"] == [1e17, 1e19]
    assert any("used anyway" in w for w in fits["warnings"])
    assert any("lines through 2 budgets" in w for w in fits["warnings"])


def test_plots_are_written(points, fits, boot, tmp_path):
    isoflop = plot_isoflop(points, fits, tmp_path / "isoflop.png")
    laws = plot_power_laws(fits, tmp_path / "laws.png", target_flops=1e22, boot=boot)
    bare = plot_power_laws(fits, tmp_path / "bare.png")
    for path in (isoflop, laws, bare):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


# Validation losses of the tiny preset's sweep on the shared data (benchmarks/RESULTS.md, "Scaling laws"): N by
# depth 1-3 at width 16 x depth, losses at 6e11 and 1.2e12 FLOPs. The stack test sweeps this grid on the stack.
MEASURED_N = [69.6e3, 164e3, 280e3]
MEASURED_LOSS = {6e11: [5.751, 5.809, 6.072], 1.2e12: [5.808, 5.574, 5.678]}


def measured_points() -> pd.DataFrame:
    return pd.DataFrame([{"budget": c, "params": n, "tokens": c / (6 * n), "loss": loss}
                         for c, losses in MEASURED_LOSS.items() for n, loss in zip(MEASURED_N, losses)])


def test_the_stack_tests_grid_recommends_a_size_inside_the_sweep():
    fits = fit_scaling_laws(measured_points())
    assert not any(f["extrapolated"] for f in fits["isoflop"])  # both minima inside the sizes tried
    assert 0 < fits["law"]["a"] < 1 and fits["loss_law"]["alpha"] > 0 and fits["loss_law"]["beta"] > 0
    advice = recommend(fits, 1.2e12)
    assert MEASURED_N[0] < advice["params"] < MEASURED_N[2]


def test_three_sizes_per_budget_cannot_be_bootstrapped():
    # a resample with replacement rarely keeps all three sizes of a budget: hence `bootstrap: 0` in the stack test
    with pytest.raises(ScalingFitError, match="resamples could be fitted: add sizes"):
        bootstrap(measured_points(), n=20, seed=0)
