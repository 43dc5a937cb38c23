"""The compute planner: the lecture's Llama-3-405B envelope, Chinchilla splits, the attention term, bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.planner import PlanError, ScalingLaw, attention_flops, build, chinchilla_split, training_flops
from infra.cli import app

LLAMA3_405B = ["--params", "405e9", "--tokens", "15.6e12", "--gpus", "16000", "--gpu", "h100",
               "--achieved-tflops", "400", "--usd-per-gpu-hour", "2"]
runner = CliRunner()


def test_llama3_405b_envelope_matches_the_lecture():
    plan = build(dict(params=405e9, tokens=15.6e12, gpus=16000, gpu="h100", achieved_tflops=400, usd_per_gpu_hour=2))
    assert plan["flops"] == pytest.approx(3.8e25, rel=0.05)
    assert plan["gpu_hours"] == pytest.approx(26e6, rel=0.05)
    assert plan["days"] == pytest.approx(70, rel=0.05)
    assert plan["cost_usd"] == pytest.approx(52e6, rel=0.05)
    assert plan["thresholds"] == {"us_eo_14110_reporting_1e26": False, "eu_ai_act_systemic_risk_1e25": True}


def test_energy_and_carbon_follow_the_assumptions():
    plan = build(dict(params=1e9, tokens=1e12, achieved_tflops=400, watts_per_gpu=1000, pue=1.5,
                      grid_kgco2e_per_kwh=0.5))
    kwh = plan["gpu_hours"] * 1.0 * 1.5
    assert plan["energy_mwh"] == pytest.approx(kwh / 1000)
    assert plan["co2e_tonnes"] == pytest.approx(kwh * 0.5 / 1000)
    assert plan["assumptions"]["pue"] == 1.5


def test_defaults_come_from_the_gpu_table_and_are_reported():
    a100 = build(dict(params=1e9, tokens=1e12, gpu="A100"))["assumptions"]
    assert (a100["gpu"], a100["peak_tflops"], a100["watts_per_gpu"], a100["mfu"]) == ("a100", 312, 400, 0.4)
    assert a100["achieved_tflops"] == pytest.approx(0.4 * 312)


def test_chinchilla_split_of_the_chinchilla_budget():
    split = chinchilla_split(5.76e23)
    assert split["params"] == pytest.approx(70e9, rel=0.05)
    assert split["tokens"] == pytest.approx(1.4e12, rel=0.05)
    plan = build(dict(flops=5.76e23))
    assert plan["params"] == pytest.approx(split["params"]) and plan["flops"] == pytest.approx(5.76e23)
    aware = plan["splits_of_this_budget"]["inference_aware"]
    assert aware["tokens_per_param"] == pytest.approx(150)
    assert training_flops(aware["params"], aware["tokens"]) == pytest.approx(5.76e23)


def test_two_of_params_tokens_flops_give_the_third():
    assert build(dict(params=1e9, flops=6e21))["tokens"] == pytest.approx(1e12)
    assert build(dict(tokens=1e12, flops=6e21))["params"] == pytest.approx(1e9)


def test_attention_term_is_added_when_the_shape_is_given():
    plan = build(dict(params=8e9, tokens=15e12, layers=32, d_model=4096, seq_len=8192))
    assert attention_flops(32, 4096, 8192, 15e12) == 12 * 32 * 8192 * 4096 * 15e12
    assert plan["flops"] == pytest.approx(6 * 8e9 * 15e12 + 12 * 32 * 8192 * 4096 * 15e12)
    assert plan["flops_6nd"] == pytest.approx(6 * 8e9 * 15e12)


def test_fitted_law_file_drives_the_split(tmp_path: Path):
    power = tmp_path / "law.json"  # a = b = 1/2 and Chinchilla's 20 tokens/param, as a fitted power law
    power.write_text(json.dumps({"a": 0.5, "b": 0.5, "n_coefficient": 1 / math.sqrt(120),
                                 "d_coefficient": 20 / math.sqrt(120)}))
    plan = build(dict(flops=5.76e23), power)
    assert plan["params"] == pytest.approx(chinchilla_split(5.76e23)["params"])
    assert "fitted_law" in plan["splits_of_this_budget"]
    loss = ScalingLaw.from_loss(A=406.4, B=410.7, alpha=0.34, beta=0.28)  # Hoffmann et al. 2022, approach-3 fit
    n, d = loss.split(5.76e23)["params"], loss.split(5.76e23)["tokens"]
    assert training_flops(n, d) == pytest.approx(5.76e23)  # the closed-form optimum spends exactly C
    parametric = tmp_path / "loss.json"
    parametric.write_text(json.dumps({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}))
    assert build(dict(flops=5.76e23), parametric)["params"] == pytest.approx(n)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(PlanError, match="n_coefficient"):
        build(dict(flops=1e23), tmp_path / "bad.json")


@pytest.mark.parametrize("inputs, message", [
    (dict(params=-405e9, tokens=1e12), "--params"),
    (dict(params=1e9, tokens=1e12, gpu="tpu-v9"), "unknown gpu"),
    (dict(params=1e9), "--tokens"),
    (dict(params=1e9, tokens=1e12, mfu=0.4, achieved_tflops=400), "not both"),
    (dict(params=1e9, tokens=1e12, achieved_tflops=2000), "exceeds"),
    (dict(params=1e9, tokens=1e12, layers=32), "--seq-len"),
])
def test_invalid_input_is_a_clear_error(inputs, message):
    with pytest.raises(PlanError, match=message):
        build(inputs)


def test_cli_json_has_the_keys():
    result = runner.invoke(app, ["plan", *LLAMA3_405B, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert {"flops", "gpu_hours", "days", "cost_usd", "co2e_tonnes", "assumptions"} <= plan.keys()
    assert plan["gpu_hours"] == pytest.approx(26e6, rel=0.05)


def test_cli_table_lists_every_assumption():
    result = runner.invoke(app, ["plan", *LLAMA3_405B])
    assert result.exit_code == 0, result.output
    for name in ("gpus", "achieved_tflops", "usd_per_gpu_hour", "watts_per_gpu", "pue", "grid_kgco2e_per_kwh"):
        assert f"assume {name}" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--params", "-405e9", "--tokens", "1e12"], "--params"),
    (["--params", "405e9", "--tokens", "1e12", "--gpu", "tpu-v9"], "unknown gpu"),
])
def test_cli_rejects_invalid_input(args, message):
    script = Path(sys.executable).parent / "llm-lifecycle"
    done = subprocess.run([str(script), "plan", *args], capture_output=True, text=True)
    assert done.returncode != 0
    assert message in done.stderr
