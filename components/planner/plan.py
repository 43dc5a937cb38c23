"""Back-of-the-envelope compute planning: FLOPs, GPU-hours, days, dollars, energy, CO2e, legal thresholds.

Every number that is not an input is an `Assumptions` field: printed with the plan, overridable on the CLI.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from pydantic import Field, ValidationError, model_validator

from components.params import StrictModel

# Peak dense bf16 tensor-core throughput (TFLOP/s, without 2:4 sparsity) and board power (W), SXM parts.
# Sources: NVIDIA H100 Tensor Core GPU datasheet (H100 SXM: 989 TFLOP/s bf16 dense, "up to 700 W"),
# NVIDIA H200 Tensor Core GPU datasheet (H200 SXM: 989 TFLOP/s, "up to 700 W"),
# NVIDIA A100 Tensor Core GPU datasheet (A100 SXM: 312 TFLOP/s bf16, 400 W).
GPUS: dict[str, dict[str, float]] = {
    "h100": {"peak_tflops": 989.0, "watts": 700.0},
    "h200": {"peak_tflops": 989.0, "watts": 700.0},
    "a100": {"peak_tflops": 312.0, "watts": 400.0},
}

# Hoffmann et al. 2022 ("Chinchilla"): compute-optimal training uses ~20 tokens per parameter.
CHINCHILLA_TOKENS_PER_PARAM = 20.0
# Models that will serve many tokens are trained past Chinchilla-optimal (Sardana & Frankle 2023, "Beyond
# Chinchilla-Optimal: Accounting for Inference in Language Model Scaling Laws"); ~150 is the lecture's rule of thumb.
INFERENCE_AWARE_TOKENS_PER_PARAM = 150.0
# Llama 3 (Dubey et al. 2024, table 4) reports 38-43% bf16 MFU on 8-16K H100s: 0.4 is the default.
DEFAULT_MFU = 0.4
# US Executive Order 14110 (Oct 2023), section 4.2(b)(i): report models trained with > 1e26 operations
# (the order was revoked in January 2025; the lecture cites it as the reference threshold).
US_EO_REPORTING_FLOPS = 1e26
# EU AI Act (Regulation 2024/1689), article 51(2): a general-purpose model trained with > 1e25 FLOPs is
# presumed to have high-impact capabilities (systemic risk).
EU_AI_ACT_SYSTEMIC_RISK_FLOPS = 1e25


class PlanError(ValueError):
    """An input the planner cannot use; the message says which and why."""


class Assumptions(StrictModel):
    """Everything the plan assumes; `None` fields are filled from the GPU table or the defaults above."""

    gpu: str = "h100"
    gpus: int = Field(1024, gt=0)
    peak_tflops: Optional[float] = Field(None, gt=0)
    mfu: Optional[float] = Field(None, gt=0, le=1)
    achieved_tflops: Optional[float] = Field(None, gt=0)
    usd_per_gpu_hour: float = Field(2.0, ge=0)
    watts_per_gpu: Optional[float] = Field(None, gt=0)
    # Datacentre overhead; 1.1-1.2 is typical for hyperscale sites (Uptime Institute / Google, Meta reports).
    pue: float = Field(1.2, ge=1)
    # Grid carbon intensity; ~0.4 kg CO2e/kWh is roughly the US / world average (IEA, EPA eGRID).
    grid_kgco2e_per_kwh: float = Field(0.4, ge=0)
    chinchilla_tokens_per_param: float = Field(CHINCHILLA_TOKENS_PER_PARAM, gt=0)
    inference_tokens_per_param: float = Field(INFERENCE_AWARE_TOKENS_PER_PARAM, gt=0)

    @model_validator(mode="after")
    def _fill_from_gpu_table(self) -> "Assumptions":
        gpu = self.gpu.lower()
        if gpu not in GPUS:
            raise ValueError(f"unknown gpu {self.gpu!r}; known: {', '.join(sorted(GPUS))}")
        if self.mfu is not None and self.achieved_tflops is not None:
            raise ValueError("give --mfu or --achieved-tflops, not both")
        peak = self.peak_tflops or GPUS[gpu]["peak_tflops"]
        achieved = self.achieved_tflops or peak * (self.mfu or DEFAULT_MFU)
        if achieved > peak:
            raise ValueError(f"achieved {achieved:g} TFLOP/s exceeds the {gpu} peak of {peak:g} TFLOP/s")
        fills = {"gpu": gpu, "peak_tflops": peak, "achieved_tflops": achieved, "mfu": achieved / peak,
                 "watts_per_gpu": self.watts_per_gpu or GPUS[gpu]["watts"]}
        for name, value in fills.items():
            object.__setattr__(self, name, value)  # frozen model: fill once, at validation
        return self


class ScalingLaw(StrictModel):
    """A fitted compute-optimal law: N_opt = n_coefficient · C^a, D_opt = d_coefficient · C^b.

    The hook for the scaling-law fit: `ScalingLaw.load(path)` reads either this power-law form
    (Hoffmann et al. 2022, approaches 1 and 2) or the parametric loss L(N, D) = E + A/N^alpha + B/D^beta
    (approach 3), from which the optimum follows in closed form (Hoffmann et al. 2022, appendix D.2).
    """

    a: float
    b: float
    n_coefficient: float = Field(gt=0)
    d_coefficient: float = Field(gt=0)

    @classmethod
    def load(cls, path: Path) -> "ScalingLaw":
        try:
            fit = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise PlanError(f"cannot read the scaling law {path}: {err}") from err
        if isinstance(fit, dict) and {"A", "B", "alpha", "beta"} <= fit.keys():
            return cls.from_loss(fit["A"], fit["B"], fit["alpha"], fit["beta"])
        try:
            return cls.model_validate(fit)
        except ValidationError as err:
            raise PlanError(f"{path}: expected keys a, b, n_coefficient, d_coefficient "
                            f"(or A, B, alpha, beta): {_messages(err)}") from err

    @classmethod
    def from_loss(cls, A: float, B: float, alpha: float, beta: float) -> "ScalingLaw":
        """N_opt = G·(C/6)^(beta/(alpha+beta)), D_opt = G⁻¹·(C/6)^(alpha/(alpha+beta)), G = (alpha·A/(beta·B))^(1/(alpha+beta))."""
        a, b = beta / (alpha + beta), alpha / (alpha + beta)
        g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
        return cls(a=a, b=b, n_coefficient=g * 6 ** -a, d_coefficient=6 ** -b / g)

    def split(self, flops: float) -> dict[str, float]:
        return _split(self.n_coefficient * flops ** self.a, self.d_coefficient * flops ** self.b)


class Model(StrictModel):
    """What is trained: any two of params, tokens, flops (or flops alone, split compute-optimally)."""

    params: Optional[float] = Field(None, gt=0)
    tokens: Optional[float] = Field(None, gt=0)
    flops: Optional[float] = Field(None, gt=0)
    layers: Optional[int] = Field(None, gt=0)
    d_model: Optional[int] = Field(None, gt=0)
    seq_len: Optional[int] = Field(None, gt=0)

    @model_validator(mode="after")
    def _enough(self) -> "Model":
        given = [x is not None for x in (self.params, self.tokens, self.flops)]
        if not any(given) or given == [True, False, False] or given == [False, True, False]:
            raise ValueError("give --params and --tokens, or --flops (with at most one of them)")
        if all(given):
            raise ValueError("give two of --params, --tokens, --flops, not all three")
        shape = [x is not None for x in (self.layers, self.d_model, self.seq_len)]
        if any(shape) and not all(shape):
            raise ValueError("the attention term needs all of --layers, --d-model, --seq-len")
        return self


def training_flops(params: float, tokens: float) -> float:
    """6·N·D: 2 FLOPs per parameter per token forward, 4 backward (Kaplan et al. 2020, section 2.1)."""
    return 6 * params * tokens


def attention_flops(layers: int, d_model: int, seq_len: int, tokens: float) -> float:
    """12·L·seq·d·D: the QKᵀ and attention-times-V matmuls, forward and backward, that 6·N·D leaves out
    (PaLM, Chowdhery et al. 2022, appendix B; Kaplan et al. 2020 table 1 counts the same term)."""
    return 12 * layers * seq_len * d_model * tokens


def chinchilla_split(flops: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> dict[str, float]:
    """C = 6·N·D with D = r·N  ⇒  N = sqrt(C / (6·r)), D = r·N (Hoffmann et al. 2022, r ≈ 20)."""
    params = math.sqrt(flops / (6 * tokens_per_param))
    return _split(params, tokens_per_param * params)


def _split(params: float, tokens: float) -> dict[str, float]:
    return {"params": params, "tokens": tokens, "tokens_per_param": tokens / params}


def resolve_model(model: Model, assume: Assumptions, law: Optional[ScalingLaw] = None) -> dict[str, float]:
    """params, tokens and the 6·N·D budget, whichever two were given."""
    if model.params is not None and model.tokens is not None:
        return {"params": model.params, "tokens": model.tokens}
    if model.params is not None:
        return {"params": model.params, "tokens": model.flops / (6 * model.params)}
    if model.tokens is not None:
        return {"params": model.flops / (6 * model.tokens), "tokens": model.tokens}
    split = law.split(model.flops) if law else chinchilla_split(model.flops, assume.chinchilla_tokens_per_param)
    return {"params": split["params"], "tokens": split["tokens"]}


def plan(model: Model, assume: Assumptions, law: Optional[ScalingLaw] = None) -> dict:
    """The whole back-of-the-envelope: compute, time, money, energy, carbon, thresholds, alternatives."""
    sizes = resolve_model(model, assume, law)
    flops_6nd = training_flops(sizes["params"], sizes["tokens"])
    flops = flops_6nd
    if model.layers is not None:
        flops += attention_flops(model.layers, model.d_model, model.seq_len, sizes["tokens"])
    gpu_hours = flops / (assume.achieved_tflops * 1e12) / 3600
    energy_kwh = gpu_hours * assume.watts_per_gpu / 1000 * assume.pue
    return {
        "params": sizes["params"], "tokens": sizes["tokens"],
        "tokens_per_param": sizes["tokens"] / sizes["params"],
        "flops": flops, "flops_6nd": flops_6nd,
        "gpu_hours": gpu_hours,
        "days": gpu_hours / assume.gpus / 24,
        "cost_usd": gpu_hours * assume.usd_per_gpu_hour,
        "energy_mwh": energy_kwh / 1000,
        "co2e_tonnes": energy_kwh * assume.grid_kgco2e_per_kwh / 1000,
        "thresholds": {"us_eo_14110_reporting_1e26": flops >= US_EO_REPORTING_FLOPS,
                       "eu_ai_act_systemic_risk_1e25": flops >= EU_AI_ACT_SYSTEMIC_RISK_FLOPS},
        "splits_of_this_budget": _splits(flops_6nd, assume, law),
        "assumptions": assume.model_dump() | {"law": law.model_dump() if law else None},
    }


def _splits(flops: float, assume: Assumptions, law: Optional[ScalingLaw]) -> dict[str, dict[str, float]]:
    splits = {"chinchilla": chinchilla_split(flops, assume.chinchilla_tokens_per_param),
              "inference_aware": chinchilla_split(flops, assume.inference_tokens_per_param)}
    if law:
        splits["fitted_law"] = law.split(flops)
    return splits


def build(inputs: dict, law_path: Optional[Path] = None) -> dict:
    """Validate CLI-shaped inputs (None = default) and plan; PlanError says what is wrong."""
    given = {k: v for k, v in inputs.items() if v is not None}
    try:
        model = Model.model_validate({k: v for k, v in given.items() if k in Model.model_fields})
        assume = Assumptions.model_validate({k: v for k, v in given.items() if k in Assumptions.model_fields})
    except ValidationError as err:
        raise PlanError(_messages(err)) from err
    return plan(model, assume, ScalingLaw.load(law_path) if law_path else None)


def _messages(err: ValidationError) -> str:
    def one(e: dict) -> str:
        msg = e["msg"].removeprefix("Value error, ")
        return f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {msg}" if e["loc"] else msg
    return "; ".join(one(e) for e in err.errors())


def render(result: dict) -> str:
    """A readable table: results first, then every assumption behind them."""
    rows = [("params", _num(result["params"])), ("tokens", _num(result["tokens"])),
            ("tokens per param", f"{result['tokens_per_param']:.1f}"),
            ("training FLOPs", f"{result['flops']:.3g}" + _attention_note(result)),
            ("GPU-hours", _num(result["gpu_hours"])), ("wall-clock days", f"{result['days']:.1f}"),
            ("cost (USD)", f"${_num(result['cost_usd'])}"), ("energy (MWh)", f"{result['energy_mwh']:,.0f}"),
            ("CO2e (tonnes)", f"{result['co2e_tonnes']:,.0f}")]
    rows += [(f"≥ threshold: {name}", "YES" if hit else "no") for name, hit in result["thresholds"].items()]
    rows += [(f"split {name}", f"N={_num(s['params'])}, D={_num(s['tokens'])} ({s['tokens_per_param']:.0f} tok/param)")
             for name, s in result["splits_of_this_budget"].items()]
    rows += [(f"assume {k}", f"{v:.4g}" if isinstance(v, float) else str(v))
             for k, v in result["assumptions"].items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _attention_note(result: dict) -> str:
    extra = result["flops"] - result["flops_6nd"]
    return f"  (6ND {result['flops_6nd']:.3g} + attention {extra:.3g})" if extra else "  (6ND)"


def _num(x: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"

