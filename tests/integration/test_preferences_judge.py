"""Simulated preference pairs against a real server: a tiny chat model served by `llm-lifecycle serve`'s code
(transformers serve, a free loopback port) is both the policy and the judge. The judge is weak; the plumbing is
real: two samples per prompt, a judge call per pair and per sampled human pair, the verdicts kept verbatim,
every request cached (a rerun asks nothing), the API key read from the variable the params name and written
nowhere, and the output through the gate."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

for _var in ("DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

from components import openai_client
from components.preferences import Endpoint, PreferenceSource, PreferencesParams, SimulationParams
from components.sft_data import SftSource
from infra import serve
from tasks.dag import Workspace
from tests.integration.test_serve import model_dir  # noqa: F401  (the tiny chat model folder fixture)

KEY_VARIABLE, KEY = "LLM_LIFECYCLE_TEST_JUDGE_KEY", "sk-test-must-not-be-written-0451"
PROMPTS = ["Name a colour.", "Say hello to the cat.", "What is the fox doing?", "Describe the fire."]


@pytest.fixture(scope="module")
def sampling_model(model_dir, tmp_path_factory) -> Path:  # noqa: F811
    """The tiny model, with `do_sample` in its generation config as chat models ship it: transformers serve
    samples only then (a request's temperature > 0 alone stays greedy, and both samples would be the same)."""
    folder = tmp_path_factory.mktemp("sampling") / "tiny-chat"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps(config | {"do_sample": True}))
    return folder


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.mark.serve
def test_policy_and_judge_behind_a_served_model(sampling_model, tmp_path, monkeypatch):
    from tasks import preferences
    from tasks.gates import validate
    from tasks.stage import StageContext

    monkeypatch.setenv("LLM_LIFECYCLE_WORKSPACE", str(tmp_path))  # where the server is recorded
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    human = write_jsonl(tmp_path / "human.jsonl", [
        {"prompt": f"Is the {animal} quick?", "chosen": f"Yes, the {animal} is quick.", "rejected": "No."}
        for animal in ("fox", "dog", "cat", "bird", "horse", "hare")])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": p, "output": "unused"} for p in PROMPTS])

    with serve.server_for(serve.resolve(str(sampling_model), Workspace(tmp_path)), device="cpu") as server:
        def endpoint(**sampling) -> Endpoint:
            return Endpoint(base_url=server["base_url"], model=server["model"], **sampling)

        params = PreferencesParams(
            sources=[PreferenceSource(name="human", format="pairs", uri=str(human))],
            simulation=SimulationParams(
                enabled=True, prompts=SftSource(name="prompts", format="alpaca", uri=str(prompts)),
                policy=endpoint(temperature=1.0, max_tokens=12),
                judge=endpoint(temperature=0, max_tokens=6, api_key_env=KEY_VARIABLE), agreement_pairs=4, seed=3),
            tokenizer=str(sampling_model), val_fraction=0.3, max_seq_len=2048)

        def run(name: str):
            ctx = StageContext(spec=None, params=params, inputs={}, out_dir=tmp_path / name / "out",
                               report_dir=tmp_path / name / "reports", state_dir=tmp_path / "state")
            ctx.out_dir.mkdir(parents=True)
            return ctx, preferences.run(ctx, progress=False)

        ctx, metrics = run("first")
    manifest = json.loads((ctx.out_dir / "manifest.json").read_text())
    simulation = manifest["simulation"]
    outcomes = simulation["outcomes"]
    assert simulation["prompts"] == sum(outcomes.values()) == len(PROMPTS)
    judged = len(PROMPTS) - outcomes.get("same_replies", 0) - outcomes.get("empty_content", 0)
    assert judged > 0  # the policy sampled: two different replies reached the judge
    assert metrics["requests_made"] == 2 * len(PROMPTS) + judged + 4 and metrics["requests_cached"] == 0
    assert simulation["judge_agreement"]["pairs"] == 4
    judgements = [json.loads(line) for line in (ctx.report_dir / "judgements.jsonl").read_text().splitlines()]
    assert sum("verdict" in j for j in judgements) == judged + 4  # every answer kept as the judge wrote it
    assert all(len(j["samples"]) == 2 for j in judgements if j["task"] == "simulate")
    assert manifest["sources"][-1]["policy"] == {"base_url": server["base_url"], "model": server["model"]}
    assert manifest["by_source"]["simulated"]["read"] == outcomes.get("pair", 0)
    written = [p for folder in (tmp_path / "state", tmp_path / "first") for p in folder.rglob("*") if p.is_file()]
    assert len(written) > 10 and not [p for p in written if KEY in p.read_text(errors="replace")]
    validate("preference_pairs", ctx.out_dir, pattern="pairs-*.parquet", params=params)

    # the server is gone: a rerun is answered from the cache alone
    monkeypatch.setattr(openai_client, "chat_completion", lambda *a, **kw: pytest.fail("asked again"))
    again, rerun = run("again")
    assert rerun["requests_cached"] == metrics["requests_made"] and rerun["requests_made"] == 0
    assert (again.out_dir / "manifest.json").read_text() == (ctx.out_dir / "manifest.json").read_text()
