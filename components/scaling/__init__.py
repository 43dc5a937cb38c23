"""Scaling laws from an isoFLOP sweep (Hoffmann et al. 2022, approaches 2 and 3): fits, bootstrap, plots.

`fit_scaling_laws(points)` fits both approaches; `bootstrap(points)` gives their uncertainty;
`recommend(fits, target_flops, boot)` the compute-optimal N and D at a larger budget; `plot_isoflop` and
`plot_power_laws` draw them.
"""
from components.scaling.fit import (LossLaw, PowerLaw, ScalingFitError, bootstrap, fit_isoflop, fit_loss_law,
                                    fit_power_law, fit_scaling_laws, recommend)
from components.scaling.plots import plot_isoflop, plot_power_laws

__all__ = ["LossLaw", "PowerLaw", "ScalingFitError", "bootstrap", "fit_isoflop", "fit_loss_law", "fit_power_law",
           "fit_scaling_laws", "plot_isoflop", "plot_power_laws", "recommend"]
