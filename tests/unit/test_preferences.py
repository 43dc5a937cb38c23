"""The preferences stage on the real files in ../shared/data (HH-RLHF harmless-base, LLaMA-Factory's DPO demo,
OpenAssistant trees, AlpacaEval) and on small files made here: readers, bad input, the chat template and its
last-reply mask, decontamination, the split by prompt, the gate, the simulation with a stand-in endpoint, and
the output read back by the reward and DPO objectives."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from openai.types.chat import ChatCompletion

from components import openai_client
from components.preferences import (CachedChat, Endpoint, PreferenceDataError, PreferenceSource,
                                    PreferencesParams, SimulationParams, make_pair, parse_verdict, prompt_id,
                                    read_preferences)
from components.preferences.simulate import simulate
from components.sft_data import EvalSet, SftSource, encode
from components.sft_data.params import DecontaminationParams
from components.train.objectives.pairs import read_pairs
from tests.unit.test_sft_data import ALPACA_EVAL, CHAT, OASST, tokenizer, tokenizer_dir, trained_runs  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
HH = "preference/hh-rlhf/harmless-base-test-part.jsonl.gz"
DPO_DEMO = "preference/llamafactory-demo/dpo_en_demo.json"
STOPS = "<|im_end|><|end_of_text|>"  # what the mask trains after the reply


def source(uri, format: str = "pairs", **options) -> PreferenceSource:
    return PreferenceSource(name="src", format=format, uri=str(uri), **options)


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def transcript(turns: list[dict]) -> str:
    """HH-RLHF's way of writing a conversation."""
    speaker = {"user": "Human", "assistant": "Assistant"}
    return "".join(f"\n\n{speaker[turn['role']]}: {turn['content']}" for turn in turns)


# --- readers ----------------------------------------------------------------------------------------------------

def test_hh_rlhf_transcripts_split_into_the_shared_prompt_and_two_replies(data_dir):
    read = read_preferences(source(data_dir / HH, "hh_rlhf"), on_bad_record="count")
    assert len(read.examples) == 1988 and read.files[0]["records"] == 2000
    # the test part's own flaws, each counted with its file and line
    assert sorted(b["reason"] for b in read.bad_records) == ["empty_content"] * 4 + ["prompts_differ"] * 4 + [
        "turn_order"] * 4
    first = read.examples[0]
    assert [m["role"] for m in first.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert first.prompt[0]["content"] == "what are some pranks with a pen i can do?"
    assert first.prompt[-1]["content"] == "okay some of these do not have anything to do with pens"
    assert first.chosen.startswith("No, sorry!  All of these involve a pen")
    assert first.rejected.startswith("There are lots of funny things you can do with pens")
    with gzip.open(data_dir / HH, "rt") as file:
        record = json.loads(file.readline())
    for side in ("chosen", "rejected"):  # prompt + reply writes the transcript back
        reply = {"role": "assistant", "content": getattr(first, side)}
        assert transcript([*first.prompt, reply]) == record[side]
    assert len(read_preferences(source(data_dir / HH, "hh_rlhf", max_examples=600), "count").examples) == 600


def test_llamafactory_dpo_demo_reads_sharegpt_conversations_as_the_prompt(data_dir):
    pairs = read_preferences(source(data_dir / DPO_DEMO)).examples
    records = json.loads((data_dir / DPO_DEMO).read_text())
    assert len(pairs) == len(records) == 300
    at = next(i for i, r in enumerate(records) if len(r["conversations"]) == 5)  # a multi-turn prompt
    assert [m["content"] for m in pairs[at].prompt] == [t["value"].strip() for t in records[at]["conversations"]]
    assert pairs[at].chosen == records[at]["chosen"]["value"].strip()
    assert pairs[at].rejected == records[at]["rejected"]["value"].strip()
    assert sum(p.prompt[0]["role"] == "system" for p in pairs) == 80


def test_dpo_format_prompt_as_string_messages_or_conversations(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
        {"prompt": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "2 + 3?"}],
         "chosen": [{"role": "assistant", "content": "5"}], "rejected": [{"role": "assistant", "content": "6"}]},
        {"conversations": [{"from": "human", "value": "2 + 4?"}], "chosen": {"from": "gpt", "value": "6"},
         "rejected": {"from": "gpt", "value": "7"}},
    ])
    first, second, third = read_preferences(source(path)).examples
    assert (first.prompt, first.chosen, first.rejected) == ([{"role": "user", "content": "2 + 2?"}], "4", "5")
    assert [m["role"] for m in second.prompt] == ["system", "user"] and second.chosen == "5"
    assert third.prompt == [{"role": "user", "content": "2 + 4?"}] and (third.chosen, third.rejected) == ("6", "7")
    assert first.id == read_preferences(source(path)).examples[0].id and first.id.startswith("src/")
    assert first.origin == "human"


def test_oasst_ranked_siblings_become_pairs_widest_rank_gap_first(data_dir):
    pairs = read_preferences(source(data_dir / OASST, "oasst")).examples
    capped = read_preferences(source(data_dir / OASST, "oasst", max_pairs_per_prompt=3)).examples
    assert (len(pairs), len(capped)) == (754, 522)  # n ranked replies make n(n-1)/2 pairs
    tree = json.loads((data_dir / OASST).read_text().splitlines()[0])["prompt"]
    by_rank = {reply["rank"]: reply["text"].strip() for reply in tree["replies"]}
    assert [(p.chosen, p.rejected) for p in pairs[:3]] == [(by_rank[0], by_rank[2]), (by_rank[0], by_rank[1]),
                                                           (by_rank[1], by_rank[2])]
    assert all(p.prompt == [{"role": "user", "content": tree["text"].strip()}] for p in pairs[:3])
    assert max(len(p.prompt) for p in pairs) >= 3  # deeper prompt paths carry their history


def test_oasst_pairs_skip_deleted_and_unranked_replies_and_follow_every_branch(tmp_path):
    def message(text, role, rank=None, replies=(), **flags):
        return {"text": text, "role": role, "rank": rank, "replies": list(replies), **flags}

    follow_up = message("And then?", "prompter", replies=[message("Then B.", "assistant", rank=0),
                                                          message("No idea.", "assistant", rank=1)])
    tree = {"prompt": message("Question?", "prompter", replies=[
        message("deleted best", "assistant", rank=0, deleted=True), message("unranked", "assistant"),
        message("second", "assistant", rank=2), message("first", "assistant", rank=1, replies=[follow_up])])}
    pairs = read_preferences(source(write_jsonl(tmp_path / "trees.jsonl", [tree]), "oasst")).examples
    assert [(p.chosen, p.rejected) for p in pairs] == [("first", "second"), ("Then B.", "No idea.")]
    assert [m["content"] for m in pairs[1].prompt] == ["Question?", "first", "And then?"]


# --- bad input ---------------------------------------------------------------------------------------------------

GOOD = {"prompt": "Add 2 and 2.", "chosen": "4", "rejected": "22"}
HH_GOOD = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}
BAD_INPUT = {  # file content, format, the line named, words of the message
    "malformed_line": ([GOOD, GOOD, '{"prompt": "x", "chosen": '], "pairs", 3, "malformed JSON"),
    "empty_reply": ([GOOD, GOOD | {"rejected": "  "}], "pairs", 2, "assistant turn is empty"),
    "same_replies": ([GOOD, GOOD | {"rejected": " 4 "}], "pairs", 2, "chosen and the rejected reply are the same"),
    "missing_reply": ([{"prompt": "Q", "chosen": "A"}], "pairs", 1, "'rejected' is not a reply"),
    "no_prompt": ([{"question": "Q", "chosen": "A", "rejected": "B"}], "pairs", 1, "no 'prompt'"),
    "prompt_ends_with_assistant": ([{"prompt": [{"role": "user", "content": "Q"}, {"role": "assistant",
                                                                                   "content": "A"}],
                                     "chosen": "B", "rejected": "C"}], "pairs", 1, "alternating"),
    "hh_prompts_differ": ([HH_GOOD, HH_GOOD | {"rejected": "\n\nHuman: Bye\n\nAssistant: Go away."}], "hh_rlhf", 2,
                          "differ before their last turn"),
    "hh_not_a_transcript": ([{"chosen": "Hello", "rejected": "Bye"}], "hh_rlhf", 1, "not a transcript"),
    "not_json": (["prompt,chosen,rejected", "a,b,c"], "pairs", 1, "not JSON"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_stops_the_stage_naming_the_file_and_line(tmp_path, case):
    lines, format, line, words = BAD_INPUT[case]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(PreferenceDataError) as error:
        read_preferences(source(path, format))
    assert f"{path}: line {line}: " in str(error.value) and words in str(error.value)


def test_count_policy_drops_and_reports_bad_records(tmp_path):
    lines = [GOOD, '{"broken', GOOD | {"chosen": "22"}, GOOD | {"prompt": "Add 3 and 3.", "chosen": "6"}]
    read = read_preferences(source(write_jsonl(tmp_path / "mixed.jsonl", lines)), on_bad_record="count")
    assert [p.chosen for p in read.examples] == ["4", "6"]
    assert [(b["line"], b["reason"]) for b in read.bad_records] == [(2, "malformed_json"), (3, "same_replies")]
    assert "preferences.on_bad_record" in str(pytest.raises(PreferenceDataError, read_preferences,
                                                            source(tmp_path / "mixed.jsonl")).value)


# --- tokens and mask ----------------------------------------------------------------------------------------------

def test_only_the_last_reply_and_its_stop_tokens_are_trained(tokenizer):
    pair = make_pair("src", "human", ([(m["role"], m["content"]) for m in CHAT[:-1]],
                                      ("assistant", CHAT[-1]["content"]), ("assistant", "Three.")))
    for reply in (pair.chosen, pair.rejected):
        encoded = encode(tokenizer, pair.conversation(reply), last_reply_only=True)
        templated = tokenizer.apply_chat_template(pair.conversation(reply), tokenize=True)["input_ids"]
        assert encoded.input_ids == list(templated[:-1]) + [tokenizer.eos_token_id]  # EOS after the stop token
        runs = [tokenizer.decode(run, skip_special_tokens=False) for run in trained_runs(*encoded)]
        assert runs == [reply + STOPS]  # the earlier assistant turn is context


# --- the stage ---------------------------------------------------------------------------------------------------

def test_params_yaml_section_validates_and_reads_the_shared_data_offline(data_dir):
    section = yaml.safe_load((REPO / "params.yaml").read_text())["preferences"]
    params = PreferencesParams.model_validate(section).for_data_dir(data_dir)
    assert params.tokenizer is None and not params.simulation.enabled
    for entry in [*params.sources, *params.decontamination.eval_sets, params.simulation.prompts]:
        assert entry.uri.startswith(str(data_dir)) and list(data_dir.glob(entry.offline)), entry.name


@pytest.fixture(scope="module")
def stage(data_dir, tokenizer_dir, tmp_path_factory):
    """The stage on HH-RLHF (capped), the LLaMA-Factory demo, OpenAssistant siblings and a file with one pair
    whose prompt is an AlpacaEval instruction; returns a function that runs it again into a fresh folder."""
    from tasks import preferences
    from tasks.stage import StageContext

    folder = tmp_path_factory.mktemp("sources")
    planted = json.loads((data_dir / ALPACA_EVAL).read_text())[7]["instruction"]
    write_jsonl(folder / "planted.jsonl", [{"prompt": planted, "chosen": "A search engine's co-founder.",
                                            "rejected": "A copied benchmark answer."}])
    params = PreferencesParams(
        sources=[PreferenceSource(name="hh", format="hh_rlhf", uri=str(data_dir / HH), max_examples=150),
                 PreferenceSource(name="dpo_demo", format="pairs", uri=str(data_dir / DPO_DEMO), max_examples=100),
                 PreferenceSource(name="oasst", format="oasst", uri=str(data_dir / OASST), max_pairs_per_prompt=3),
                 PreferenceSource(name="planted", format="pairs", uri=str(folder / "planted.jsonl"))],
        on_bad_record="count",
        decontamination=DecontaminationParams(eval_sets=[EvalSet(name="alpaca_eval", format="json",
                                                                 fields=["instruction"],
                                                                 uri=str(data_dir / ALPACA_EVAL))]),
        val_fraction=0.2, max_seq_len=1024)

    def run():
        root = tmp_path_factory.mktemp("stage")
        ctx = StageContext(spec=None, params=params, inputs={"tokenizer": tokenizer_dir}, out_dir=root / "out",
                           report_dir=root / "reports", state_dir=root / "state")
        ctx.out_dir.mkdir()
        return ctx, preferences.run(ctx, progress=False)

    return run


@pytest.fixture(scope="module")
def staged(stage):
    return stage()


def test_stage_end_to_end(staged, tokenizer_dir):
    from tasks.gates import validate

    ctx, metrics = staged
    out, reports = ctx.out_dir, ctx.report_dir
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "pairs-train.parquet", "pairs-val.parquet"]
    result = validate("preference_pairs", out, pattern="pairs-*.parquet", params=ctx.params)
    assert result["success"] and [c["column"] for c in result["checks"]] == ["id", "prompt_id"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads((reports / "manifest.json").read_text())
    assert manifest["special_token_ids"] == {"eos": 1, "im_end": 4, "pad": 2} and manifest["vocab_size"] == 1000
    assert len(manifest["tokenizer_digest"]) > 12
    assert manifest["by_origin"] == {"human": sum(manifest["pairs"].values())}
    assert [f["url"] for s in manifest["sources"] for f in s["files"]] == [s.uri for s in ctx.params.sources]
    assert manifest["by_source"]["planted"]["contaminated"] == 1  # "Who is Larry Page?"
    assert manifest["bad_records"] and (reports / "bad_records.jsonl").read_text().count("\n") == sum(
        manifest["bad_records"].values())
    # every pair read is in the output or in removed.jsonl
    read = sum(s["read"] for s in manifest["by_source"].values())
    removed = (reports / "removed.jsonl").read_text().splitlines()
    assert read == sum(manifest["pairs"].values()) + len(removed) and manifest["removed"]["too_long"] > 0
    assert metrics["pairs_train"] == manifest["pairs"]["train"] > 300 and metrics["pairs_val"] > 50
    assert metrics["oasst_pairs"] == sum(manifest["by_source"]["oasst"][split] for split in ("train", "val"))
    card = (reports / "preferences_card.md").read_text()
    assert "| oasst |" in card and "chosen is longer" in card and "## Decontamination" in card


def test_split_keeps_every_prompt_on_one_side_and_reruns_alike(stage, staged):
    ctx, _ = staged
    train, val = (pd.read_parquet(ctx.out_dir / f"pairs-{split}.parquet") for split in ("train", "val"))
    assert not set(train["prompt_id"]) & set(val["prompt_id"]) and not set(train["id"]) & set(val["id"])
    both = pd.concat([train, val])
    assert (both.groupby("prompt_id").size() > 1).sum() > 50  # OpenAssistant prompts with several pairs
    assert all(prompt_id(json.loads(p)) == h for p, h in zip(both["prompt"], both["prompt_id"]))
    assert (train["split"] == "train").all() and (val["split"] == "val").all()
    again, _ = stage()
    for split in ("train", "val"):
        assert (pd.read_parquet(again.out_dir / f"pairs-{split}.parquet")["id"].tolist()
                == pd.read_parquet(ctx.out_dir / f"pairs-{split}.parquet")["id"].tolist())


def test_every_mask_decodes_to_exactly_its_reply_and_stop_tokens(staged, tokenizer):
    ctx, _ = staged
    rows = pd.read_parquet(ctx.out_dir / "pairs-train.parquet")
    assert rows["chosen_ids"].iloc[0].dtype == "int32" and rows["chosen_mask"].iloc[0].dtype == "int8"
    for side in ("chosen", "rejected"):
        for reply, ids, mask, tokens in zip(rows[side], rows[f"{side}_ids"], rows[f"{side}_mask"],
                                            rows[f"{side}_tokens"]):
            assert tokenizer.decode(ids[mask == 1], skip_special_tokens=False) == reply + STOPS
            assert len(ids) == len(mask) == tokens <= ctx.params.max_seq_len


def test_the_reward_and_dpo_objectives_read_the_pairs_back(staged):
    ctx, _ = staged
    pairs = read_pairs(ctx.out_dir, "val")
    val = pd.read_parquet(ctx.out_dir / "pairs-val.parquet")
    assert len(pairs) == len(val)
    assert [len(ids) for ids in pairs.chosen] == val["chosen_tokens"].tolist()
    assert all(mask.dtype == bool and mask.any() for mask in pairs.rejected_mask)
    batch = pairs.take(np.arange(2), pad_id=2)
    assert batch["input_ids"].shape[0] == 4  # chosen rows, then rejected rows
    labelled = batch["labels"][0][batch["labels"][0] >= 0].tolist()
    assert labelled == pairs.chosen[0][pairs.chosen_mask[0]].tolist()


def test_gate_names_the_rows_with_the_same_reply_an_empty_reply_or_a_prompt_in_both_splits(staged, tmp_path):
    from tasks.gates import GateFailed, validate

    ctx, _ = staged
    train = pd.read_parquet(ctx.out_dir / "pairs-train.parquet")
    bad = train.copy()
    bad.loc[0, "rejected"] = bad.loc[0, "chosen"]
    bad.loc[1, "chosen"] = "   "
    bad.loc[2, "rejected_tokens"] = ctx.params.max_seq_len + 1
    bad.to_parquet(tmp_path / "pairs-train.parquet", index=False)
    train.iloc[3:4].assign(id="moved/1").to_parquet(tmp_path / "pairs-val.parquet", index=False)
    with pytest.raises(GateFailed) as failed:
        validate("preference_pairs", tmp_path, pattern="pairs-*.parquet", params=ctx.params)
    message = str(failed.value)
    assert "column='same_replies'" in message and train.loc[0, "id"] in message
    assert "column='chosen_chars'" in message and train.loc[1, "id"] in message
    assert "column='rejected_tokens'" in message and train.loc[2, "id"] in message
    assert "unique_across_shards(column='prompt_id')" in message and train.loc[3, "prompt_id"] in message


# --- simulation ---------------------------------------------------------------------------------------------------

class StandIn:
    """An OpenAI-compatible endpoint in-process: the policy writes "<seed>: <prompt>" (one prompt gets the same
    reply twice); the judge prefers the longer output, and cannot decide when an output says "undecidable"."""

    def __init__(self):
        self.requests = []

    def __call__(self, base_url, model, messages, api_key_env=None, **sampling):
        self.requests.append((model, api_key_env, sampling))
        if model == "policy":
            prompt = messages[-1]["content"]
            text = prompt if "twice" in prompt else f"{sampling['seed']}: {prompt}" + "!" * sampling["seed"]
        else:
            first, second = messages[-1]["content"].split("Output (a):\n")[1].split("\n\nOutput (b):\n")
            second = second.split("\n\nWhich output")[0]
            text = ("I cannot tell." if "undecidable" in first + second
                    else f"Output ({'a' if len(first) >= len(second) else 'b'})")
        return ChatCompletion.model_validate({
            "id": "stand-in", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]})


def test_simulated_pairs_judge_agreement_and_a_rerun_that_asks_nothing(tmp_path, monkeypatch):
    stand_in = StandIn()
    monkeypatch.setattr(openai_client, "chat_completion", stand_in)
    topics = ("cats", "dogs", "twice", "undecidable")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": f"Tell me about {topic}.", "output": "-"}
                                                       for topic in topics])
    params = SimulationParams(
        enabled=True, prompts=SftSource(name="prompts", format="alpaca", uri=str(prompts)),
        policy=Endpoint(base_url="http://policy/v1", model="policy", temperature=0.8),
        judge=Endpoint(base_url="http://judge/v1", model="judge", api_key_env="JUDGE_KEY", temperature=0),
        agreement_pairs=3, seed=5)
    human = [make_pair("hh", "human", ([("user", f"Q{i}")], ("assistant", chosen), ("assistant", rejected)))
             for i, (chosen, rejected) in enumerate([("long answer", "no"), ("yes", "longer no"), ("fine", "ok")])]
    chat = CachedChat(tmp_path / "requests")
    result = simulate(params, human, chat, progress=False)

    assert dict(result.outcomes) == {"pair": 2, "same_replies": 1, "judge_unparsed": 1}
    pairs = result.read.examples
    assert [(p.chosen, p.rejected) for p in pairs] == [("6: Tell me about cats.!!!!!!", "5: Tell me about cats.!!!!!"),
                                                       ("6: Tell me about dogs.!!!!!!", "5: Tell me about dogs.!!!!!")]
    assert {p.origin for p in pairs} == {"simulated"} and {p.source for p in pairs} == {"simulated"}
    assert result.read.files[0]["url"] == str(prompts)
    # the coin showed the longer reply first for some prompts and second for others: the judge saw both orders
    verdicts = [j for j in result.judgements if j["task"] == "simulate" and j.get("picked") is not None]
    assert {j["picked_first"] for j in verdicts} | {j["picked_first"] for j in result.judgements
                                                    if j["task"] == "agreement"} == {True, False}
    assert all(j["verdict"].startswith("Output (") for j in verdicts)
    assert result.agreement | {"agreement_low": None, "agreement_high": None} == {
        "pairs": 3, "judged": 3, "unparsed": 0, "agreed": 2, "agreement": 2 / 3, "agreement_low": None,
        "agreement_high": None, "first_position_share": result.agreement["first_position_share"]}
    assert 0 < result.agreement["agreement_low"] < 2 / 3 < result.agreement["agreement_high"] < 1
    assert {key for model, key, _ in stand_in.requests if model == "judge"} == {"JUDGE_KEY"}  # the NAME, not a key
    assert all(sampling["temperature"] == 0.8 for model, _, sampling in stand_in.requests if model == "policy")
    made = chat.counts["made"]
    assert made == len(stand_in.requests) == 4 * 2 + 3 + 3  # 2 samples per prompt, 3 pairs judged, 3 human

    monkeypatch.setattr(openai_client, "chat_completion", lambda *a, **kw: pytest.fail("asked again"))
    again = CachedChat(tmp_path / "requests")
    rerun = simulate(params, human, again, progress=False)
    assert again.counts == {"cached": made} and rerun.read.examples == pairs and rerun.agreement == result.agreement


@pytest.mark.parametrize("answer, picked", [("Output (a)", 0), ("output (B) is better", 1), ("b", 1), ("(a).", 0),
                                            ("Output (a) or Output (b)", None), ("Neither.", None), ("", None)])
def test_verdicts_are_read_from_the_judges_words(answer, picked):
    assert parse_verdict(answer) == picked


def test_simulated_pairs_go_through_the_stage_with_their_lineage(tokenizer_dir, tmp_path, monkeypatch):
    from tasks import preferences
    from tasks.gates import validate
    from tasks.stage import StageContext

    monkeypatch.setattr(openai_client, "chat_completion", StandIn())
    human = write_jsonl(tmp_path / "human.jsonl", [GOOD, GOOD | {"prompt": "Add 3 and 3.", "chosen": "6"}])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": f"Say {n}.", "output": "-"} for n in range(6)])
    params = PreferencesParams(
        sources=[PreferenceSource(name="hh", format="pairs", uri=str(human))],
        simulation=SimulationParams(enabled=True, prompts=SftSource(name="prompts", format="alpaca", uri=str(prompts)),
                                    policy=Endpoint(base_url="http://policy/v1", model="policy"),
                                    judge=Endpoint(base_url="http://judge/v1", model="judge", temperature=0)),
        tokenizer=str(tokenizer_dir), val_fraction=0.3)
    ctx = StageContext(spec=None, params=params, inputs={}, out_dir=tmp_path / "out", report_dir=tmp_path / "reports",
                       state_dir=tmp_path / "state")
    ctx.out_dir.mkdir()
    metrics = preferences.run(ctx, progress=False)

    validate("preference_pairs", ctx.out_dir, pattern="pairs-*.parquet", params=params)
    manifest = json.loads((ctx.out_dir / "manifest.json").read_text())
    assert manifest["by_origin"] == {"human": 2, "simulated": 6} and metrics["simulated_pairs"] == 6
    assert manifest["sources"][-1] | {"files": None} == {
        "name": "simulated", "uri": str(prompts), "format": "alpaca", "origin": "simulated", "files": None,
        "policy": {"base_url": "http://policy/v1", "model": "policy"},
        "judge": {"base_url": "http://judge/v1", "model": "judge"}}
    assert manifest["simulation"]["outcomes"] == {"pair": 6}
    assert metrics["judge_agreement"] == 0.0  # the stand-in prefers the longer reply, people the right sum ("4")
    assert metrics["requests_made"] == 6 * 3 + 2 and "## Simulated pairs" in (
        ctx.report_dir / "preferences_card.md").read_text()
    rows = pd.concat(pd.read_parquet(ctx.out_dir / f"pairs-{split}.parquet") for split in ("train", "val"))
    simulated = rows[rows["origin"] == "simulated"]
    assert (simulated["chosen"].str.len() > simulated["rejected"].str.len()).all()  # the stand-in's taste
