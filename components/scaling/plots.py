"""The two figures of an isoFLOP sweep: the loss profiles per budget, and N_opt, D_opt against C."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.scaling.fit import as_points, flops_label, recommend, resample_splits  # noqa: E402


def plot_isoflop(points, fits: dict, path: Path) -> Path:
    """Loss against N (log x), one colour per budget: the points, the fitted parabola, its minimum (a star,
    hollow when extrapolated). `fits` is `fit_scaling_laws`'s result."""
    p = as_points(points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(fits["isoflop"])))
    for f, colour in zip(fits["isoflop"], colours):
        at = p.budget == f["budget"]
        ax.scatter(p.params[at], p.loss[at], color=colour, s=18, label=f"C = {flops_label(f['budget'])}")
        low, high = f["params_range"]
        # the curve and its star within 4x of the sizes tried: a minimum further out is a guess, drawn at the
        # edge (hollow) rather than stretching the axis over orders of magnitude no model was trained at
        shown = float(np.clip(f["params_opt"], low / 4, high * 4))
        n = np.geomspace(min(low, shown) / 1.5, max(high, shown) * 1.5, 100)
        ax.plot(n, np.polyval(f["parabola"], np.log(n)), color=colour, lw=1)
        ax.scatter([shown], [np.polyval(f["parabola"], np.log(shown))], marker="*", s=140, edgecolors=colour,
                   zorder=3, facecolors="none" if f["extrapolated"] else colour)
    ax.set(xscale="log", xlabel="parameters N", ylabel="final loss",
           title="IsoFLOP profiles (star: minimum; hollow: outside the sizes tried)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_power_laws(fits: dict, path: Path, target_flops: Optional[float] = None, boot: Optional[dict] = None) -> Path:
    """N_opt and D_opt against C (log-log): the per-budget minima (hollow when left out of the fit), the
    fitted lines extended to `target_flops` and the recommendation there, the bootstrap's 90% band if given."""
    law, budgets = fits["law"], [f["budget"] for f in fits["isoflop"]]
    c = np.geomspace(min(budgets), max(budgets + [target_flops or 0]), 100)
    pick = recommend(fits, target_flops, boot) if target_flops else None
    bands = resample_splits(boot, c) if boot else {}
    used = ["C0" if f["budget"] in fits["law_budgets"] else "none" for f in fits["isoflop"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, opt, coefficient, exponent in ((axes[0], "params", "params_opt", "n_coefficient", "a"),
                                                (axes[1], "tokens", "tokens_opt", "d_coefficient", "b")):
        ax.scatter(budgets, [f[opt] for f in fits["isoflop"]], edgecolors="C0", facecolors=used, zorder=3,
                   label="isoFLOP minima")
        ax.plot(c, law[coefficient] * c ** law[exponent], color="C1",
                label=f"{law[coefficient]:.3g}·$C^{{{law[exponent]:.3f}}}$")
        if key in bands:
            ax.fill_between(c, *np.percentile(bands[key], [5, 95], axis=0), color="C1", alpha=0.2,
                            label="bootstrap 90%")
        if pick:
            ax.scatter([target_flops], [pick[key]], marker="*", s=200, color="C3", zorder=4,
                       label=f"{key} at C = {flops_label(target_flops)}: {pick[key]:.3g}")
        ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=f"optimal {key}")
        ax.legend(fontsize=8)
    fig.suptitle("Compute-optimal model size and data (Hoffmann et al. 2022, approach 2)")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
