"""Compute planning: the lecture's back-of-the-envelope (FLOPs, GPU-hours, days, cost, energy, CO2e)."""
from components.planner.plan import (GPUS, Assumptions, Model, PlanError, ScalingLaw, attention_flops, build,
                                     chinchilla_split, plan, render, training_flops)

__all__ = ["GPUS", "Assumptions", "Model", "PlanError", "ScalingLaw", "attention_flops", "build",
           "chinchilla_split", "plan", "render", "training_flops"]
