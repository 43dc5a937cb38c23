"""Self-instruct synthetic data (components/sft_data/selfinstruct.py) on Alpaca's seed tasks and prompt in
../shared/data: the request as Alpaca builds it, parsing replies (a truncated one too), each filter, ROUGE-L
against the package, the response cache, the run's accounting, and the sft_data stage with the synthetic source.
A stand-in for the client's `chat_completion` answers here; tests/integration/test_selfinstruct_teacher.py asks a served
model."""
from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from openai.types.chat import ChatCompletion

from components import openai_client
from components.ingest.params import Source
from components.sft_data import SftDataParams, SftSource
from components.sft_data.params import SyntheticParams
from components.sft_data.selfinstruct import (DROP_REASONS, InstructionPool, Task, broken_rule, generate, list_prompt,
                                              parse_reply, read_prompt, read_seed_tasks, request_prompt, teacher)
from tests.unit.test_sft_data import tokenizer_dir  # noqa: F401 (a fixture: the project's tokenizer, trained here)

ALPACA = "sft/stanford_alpaca"
KEY_ENV, KEY = "SELFINSTRUCT_TEST_KEY", "sk-planted-0123456789"


@pytest.fixture(scope="module")
def alpaca(data_dir) -> SyntheticParams:
    """Alpaca's seed tasks and prompt, a teacher at an address nothing listens on (the stand-in answers)."""
    return SyntheticParams(enabled=True, base_url="http://127.0.0.1:9/v1", model="teacher", api_key_env=KEY_ENV,
                           seed_tasks=Source(uri=str(data_dir / ALPACA / "seed_tasks.jsonl")),
                           prompt=Source(uri=str(data_dir / ALPACA / "prompt.txt")), concurrency=2)


# --- the request -----------------------------------------------------------------------------------------------

def test_request_is_alpacas_prompt_then_numbered_demonstrations(alpaca):
    url, prompt = read_prompt(alpaca)
    assert url == alpaca.prompt.uri and prompt.endswith("List of 20 tasks:")
    assert list_prompt(prompt, 20) == prompt
    twelve = list_prompt(prompt, 12)
    assert "a set of 12 diverse task instructions" in twelve and twelve.endswith("List of 12 tasks:")
    assert "20" not in twelve

    seeds = read_seed_tasks(alpaca)
    assert len(seeds.examples) == 175 and seeds.files[0]["records"] == 175
    assert seeds.examples[1] == Task("What is the relation between the given pairs?", "Night : Day :: Right : Left",
                                     "The relation between the given pairs is that they are opposites.")
    demonstrations = [Task("Fix   the\nspelling:", "Teh cat", "The cat"), Task("Name a colour.", "", "Red")]
    assert request_prompt(prompt, demonstrations) == (
        f"{prompt}\n"
        "###\n1. Instruction: Fix the spelling\n1. Input:\nTeh cat\n1. Output:\nThe cat\n"
        "###\n2. Instruction: Name a colour.\n2. Input:\n<noinput>\n2. Output:\nRed\n"
        "###\n3. Instruction:")


# --- the reply ---------------------------------------------------------------------------------------------------

REPLY = """ Classify the sentiment of the sentence as positive or negative.
4. Input:
I loved every minute of the film.
4. Output:
Positive
###
5. Instruction: Give three tips for staying healthy.
5. Input:
<noinput>
5. Output:
1. Eat well. 2. Exercise. 3. Sleep.
###
6. Instruction: Translate the sentence into French.
6. Input:
Good morning
6. Output:
Bonj"""


def test_a_reply_continues_the_list_with_or_without_the_first_label():
    tasks, dropped = parse_reply(REPLY, 4, truncated=False)
    assert tasks[:2] == [Task("Classify the sentiment of the sentence as positive or negative.",
                              "I loved every minute of the film.", "Positive"),
                         Task("Give three tips for staying healthy.", "", "1. Eat well. 2. Exercise. 3. Sleep.")]
    assert len(tasks) == 3 and not +dropped
    assert parse_reply(f"4. Instruction:{REPLY}", 4, truncated=False) == (tasks, dropped)


def test_a_reply_cut_by_max_tokens_loses_its_last_task_only():
    tasks, dropped = parse_reply(REPLY, 4, truncated=True)
    assert [t.instruction for t in tasks] == ["Classify the sentiment of the sentence as positive or negative.",
                                              "Give three tips for staying healthy."]
    assert dropped["truncated"] == 1
    cut_after_separator = REPLY.split("6. Instruction")[0]  # ends with "###\n": every task in it is whole
    tasks, dropped = parse_reply(cut_after_separator, 4, truncated=True)
    assert len(tasks) == 2 and dropped["truncated"] == 0


def test_tasks_without_an_output_or_with_mixed_numbers_are_malformed():
    reply = (" Say hello to the user.\n4. Input:\n<noinput>\n4. Output:\n   \n###\n"
             "5. Instruction: Count the words here.\n6. Input:\nOne two\n5. Output:\n2\n###\n"
             "Sure! Here are more tasks.")
    tasks, dropped = parse_reply(reply, 4, truncated=False)
    assert tasks == [] and dropped["malformed"] == 3


# --- the filters ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("instruction", "rule"), [
    ("Say it now.", "too_short"),  # 3 words
    (" ".join(["word"] * 151), "too_long"),
    ("Describe the IMAGES in this article briefly.", "blacklisted_word"),
    ("Tell me how to go to the station from here.", "blacklisted_word"),
    ("Write a program that sorts a list of numbers.", "write_a_program"),
    ('"Quoted" instructions are not kept here.', "starts_with_punctuation"),
    ("Élan: define the word and use it.", "starts_non_ascii"),
    ("Explain the mapping between the two tables.", None),  # "map" only as a whole word
    ("Describe what happens when water boils.", None),
])
def test_alpacas_rules(instruction, rule):
    assert broken_rule(instruction) == rule


def test_rouge_l_drops_a_reworded_seed_task_and_keeps_a_new_one(alpaca):
    pool = InstructionPool([task.instruction for task in read_seed_tasks(alpaca).examples], 0.7)
    assert pool.too_similar("Suggest some games that can be played by a large group of friends.")
    assert not pool.too_similar("Compose a limerick about a forgetful astronaut.")
    pool.add("Compose a limerick about a forgetful astronaut.")
    assert pool.too_similar("Compose a limerick about a forgetful young astronaut.")  # accepted tasks join the pool


@pytest.mark.parametrize("threshold", [0.7, 0.4])
def test_rouge_l_decisions_are_the_packages(alpaca, data_dir, threshold):
    """The shared-token bound skips pairs, never changes a decision: the same as scoring every pair."""
    from rouge_score.rouge_scorer import RougeScorer

    seeds = [task.instruction for task in read_seed_tasks(alpaca).examples]
    demo = json.loads((data_dir / "sft/llamafactory-demo/alpaca_en_demo.json").read_text())
    others = [record["instruction"] for record in demo]
    others = random.Random(0).sample(others, 100) + ["Suggest some games that can be played by a large group."]
    scorer, pool = RougeScorer(["rougeL"]), InstructionPool(seeds, threshold)
    decisions = [pool.too_similar(other) for other in others]
    assert decisions == [any(scorer.score(other, seed)["rougeL"].fmeasure > threshold for seed in seeds)
                         for other in others]
    assert any(decisions)


# --- the teacher and its cache -----------------------------------------------------------------------------------

def completion(text: str, finish_reason: str = "stop", prompt_tokens: int = 700, completion_tokens: int = 90):
    return ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "teacher",
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}})


@pytest.fixture
def calls(monkeypatch) -> list[dict]:
    """Every call of the client, answered by `teacher_reply`; the planted key in the environment."""
    made: list[dict] = []

    def answer(base_url, model, messages, api_key_env=None, **sampling):
        made.append({"base_url": base_url, "model": model, "messages": messages, "api_key_env": api_key_env,
                     **sampling})
        return completion(*teacher_reply(sampling["seed"]))

    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setattr(openai_client, "chat_completion", answer)
    return made


def test_each_response_is_cached_by_its_request_and_endpoint_and_the_key_is_never_written(alpaca, calls, tmp_path):
    client = teacher(alpaca, tmp_path)
    messages = [{"role": "user", "content": "List tasks."}]
    first = client.complete(messages, temperature=1.0, seed=3)
    again = client.complete(messages, temperature=1.0, seed=3)
    assert (first.cached, again.cached, len(calls)) == (False, True, 1)
    assert again.text == first.text and again.finish_reason == "length"
    assert again.response["usage"]["prompt_tokens"] == 700
    assert calls[0]["api_key_env"] == KEY_ENV  # the client reads the key; nothing here holds it

    client.complete(messages, temperature=0.5, seed=3)  # other sampling, other request
    # the teacher's address is in the digest: the same model id elsewhere may be another model
    teacher(alpaca.model_copy(update={"base_url": "http://127.0.0.1:10/v1"}), tmp_path).complete(
        messages, temperature=1.0, seed=3)
    files = sorted(tmp_path.iterdir())
    assert len(calls) == len(files) == 3 and not list(tmp_path.glob("*.tmp"))
    record = json.loads(files[0].read_text())
    assert set(record) == {"request", "response"} and set(record["request"]) == {"base_url", "model", "messages",
                                                                                 "sampling"}
    assert not any(KEY in file.read_text() for file in files)


# --- a run -------------------------------------------------------------------------------------------------------

def teacher_reply(seed: int) -> tuple[str, str]:
    """A reply cut short by max_tokens: a task for each filter, then one new task (its words unique to the request),
    one without an output, and the truncated one."""
    words = " ".join(f"w{seed}x{i}" for i in range(6))
    tasks = [("Say it now.", "Now."), (" ".join(["word"] * 151), "Words."),
             ("Draw a picture of a cat in the garden.", "A cat."),
             ("Write a program that sorts numbers quickly.", "No."),
             ('"Quoted" instructions are not kept here.', "No."), ("Élan: define the word and use it.", "Flair."),
             ("Suggest some games that can be played by a group of people.", "Charades."),  # a seed task
             (f"Describe {words}.", f"About {words}."), ("Name a river in Europe.", "   ")]  # the last: no output
    numbered = [f"{n}. Instruction: {instruction}\n{n}. Input:\n<noinput>\n{n}. Output:\n{output}"
                for n, (instruction, output) in enumerate(tasks, 4)]
    reply = "\n###\n".join([*numbered, "13. Instruction: Summarise the story of"])
    return reply.removeprefix("4. Instruction:"), "length"


def test_a_run_accepts_what_passes_counts_every_drop_and_a_rerun_asks_nothing(alpaca, calls, tmp_path):
    params = alpaca.model_copy(update={"num_instructions": 3, "price_per_1k_input_tokens": 0.5,
                                       "price_per_1k_output_tokens": 1.5})
    run = generate(params, tmp_path / "tasks.jsonl", tmp_path / "cache", progress=False)
    assert len(calls) == 3 and sorted(call["seed"] for call in calls) == [0, 1, 2]  # requests run concurrently
    assert calls[0]["stop"] == ["20. Instruction:"] and calls[0]["max_tokens"] == 3072
    assert calls[0]["messages"][0]["content"].count("\n###\n") == 4  # 3 demonstrations, then "4. Instruction:"
    written = [json.loads(line) for line in (tmp_path / "tasks.jsonl").read_text().splitlines()]
    assert written == [{"instruction": f"Describe {' '.join(f'w{s}x{i}' for i in range(6))}.", "input": "",
                        "output": f"About {' '.join(f'w{s}x{i}' for i in range(6))}."} for s in range(3)]
    summary = run.summary(params)
    assert summary["dropped"] == {reason: 3 for reason in DROP_REASONS}
    assert summary["tasks"] == {"wanted": 3, "candidates": 3 * 8, "accepted": 3}
    assert summary["requests"] == {"made": 3, "cached": 0}
    assert summary["tokens"] == summary["tokens_paid"] == {"prompt": 2100, "completion": 270}
    assert summary["cost_usd"] == summary["cost_usd_paid"] == pytest.approx(2.1 * 0.5 + 0.27 * 1.5)

    rerun = generate(params, tmp_path / "again.jsonl", tmp_path / "cache", progress=False)
    assert len(calls) == 3 and (tmp_path / "again.jsonl").read_text() == (tmp_path / "tasks.jsonl").read_text()
    summary = rerun.summary(params)
    assert summary["requests"] == {"made": 0, "cached": 3} and summary["cost_usd_paid"] == 0
    assert summary["tokens"] == {"prompt": 2100, "completion": 270}  # what the data cost, paid once


def test_requests_do_not_depend_on_concurrency_and_max_requests_bounds_a_run(alpaca, calls, tmp_path):
    generate(alpaca.model_copy(update={"num_instructions": 5}), tmp_path / "a.jsonl", tmp_path / "cache",
             progress=False)
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    one_at_a_time = alpaca.model_copy(update={"num_instructions": 5, "concurrency": 1})
    generate(one_at_a_time, tmp_path / "b.jsonl", tmp_path / "cache", progress=False)
    assert len(calls) == 5 and sorted(p.name for p in (tmp_path / "cache").iterdir()) == cached

    bounded = alpaca.model_copy(update={"num_instructions": 50, "max_requests": 2})
    run = generate(bounded, tmp_path / "c.jsonl", tmp_path / "other-cache", progress=False)
    assert len(calls) == 7 and len(run.accepted) == 2


def test_synthetic_params_are_checked():
    with pytest.raises(ValueError, match="no base_url and model"):
        SyntheticParams(enabled=True)
    with pytest.raises(ValueError, match="both prices"):
        SyntheticParams(price_per_1k_input_tokens=1.0)
    with pytest.raises(ValueError, match="api_key_env"):
        SyntheticParams(api_key_env="sk-a key pasted here")
    with pytest.raises(ValueError, match="self_instruct is the synthetic data's"):
        SftDataParams(sources=[SftSource(name="self_instruct", format="alpaca", uri="x")],
                      synthetic=SyntheticParams(enabled=True, base_url="http://h/v1", model="m"))


# --- the stage ---------------------------------------------------------------------------------------------------

def test_stage_reads_the_accepted_tasks_as_the_self_instruct_source(
        alpaca, calls, data_dir, tokenizer_dir, tmp_path):  # noqa: F811 (tokenizer_dir: the imported fixture)
    from tasks import sft_data
    from tasks.stage import StageContext

    params = SftDataParams(
        sources=[SftSource(name="alpaca", format="alpaca", max_examples=20,
                           uri=str(data_dir / "sft/llamafactory-demo/alpaca_en_demo.json"))],
        synthetic=alpaca.model_copy(update={"num_instructions": 4, "cache_dir": str(tmp_path / "cache")}),
        val_fraction=0.2, max_seq_len=512)
    ctx = StageContext(spec=None, params=params, inputs={"tokenizer": tokenizer_dir}, out_dir=tmp_path / "out",
                       report_dir=tmp_path / "reports", state_dir=tmp_path / "state")
    ctx.out_dir.mkdir()
    metrics = sft_data.run(ctx, progress=False)

    manifest = json.loads((ctx.out_dir / "manifest.json").read_text())
    assert manifest["by_source"]["self_instruct"]["read"] == 4
    rows = pd.concat(pd.read_parquet(path) for path in ctx.out_dir.glob("examples-*.parquet"))
    synthetic = rows[rows["source"] == "self_instruct"]
    assert len(synthetic) == 4 and synthetic["id"].str.startswith("self_instruct/").all()
    assert json.loads(synthetic.iloc[0]["messages"])[0]["content"].startswith("Describe w")
    lineage = manifest["sources"][-1]
    assert lineage["uri"] == str(ctx.report_dir / "self_instruct.jsonl")
    assert [(f["role"], f["url"]) for f in lineage["files"]] == [
        ("seed_tasks", alpaca.seed_tasks.uri), ("prompt", alpaca.prompt.uri), ("teacher", alpaca.base_url)]
    assert lineage["files"][2]["model"] == "teacher"
    assert metrics["synthetic_requests_made"] == 4 and metrics["synthetic_accepted"] == 4
    assert metrics["synthetic_prompt_tokens"] == 2800 and metrics["synthetic_dropped_similar_to_pool"] == 4
    assert "synthetic_cost_usd" not in metrics  # no prices
    card = (ctx.report_dir / "sft_data_card.md").read_text()
    assert "## Synthetic data (self-instruct)" in card and "| blacklisted_word | 4 |" in card
    reports = [path.read_text() for path in ctx.report_dir.iterdir()] + [(ctx.out_dir / "manifest.json").read_text()]
    assert not any(KEY in text for text in reports)
