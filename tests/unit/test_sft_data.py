"""The sft_data stage on the real files in ../shared/data (Alpaca demo, self-instruct, OpenAssistant trees,
AlpacaEval, MMLU-Redux, HellaSwag, llm-foundry) and on small files made here: readers, bad input, normalisation,
deduplication, decontamination, the chat template and its mask, the gate, and the stage end to end."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tokenizers import pre_tokenizers, trainers

from components.clean.dedup import DedupParams, normalise
from components.sft_data import (Decontaminator, EvalItem, EvalSet, Example, SftDataError, SftDataParams, SftSource,
                                 encode, example_id, load_tokenizer, read_eval_set, read_source)
from components.sft_data.build import deduplicate, tokenize
from components.sft_data.params import DecontaminationParams
from components.tokenizer import SPECIAL_TOKENS, TokenizerParams
from components.tokenizer.train import new_tokenizer, save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]
ALPACA_DEMO = "sft/llamafactory-demo/alpaca_en_demo.json"
OASST = "sft/oasst/en_100_tree.jsonl"
ALPACA_EVAL = "eval/alpaca_eval/results/gpt4/model_outputs.json"
CHAT = [{"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven: 7 = 7 × 1, naïvely."},
        {"role": "user", "content": "And an even one?"},
        {"role": "assistant", "content": "Two.\n\nIt is the only even prime."}]


def source(uri, format: str = "alpaca", **options) -> SftSource:
    return SftSource(name="src", format=format, uri=str(uri), **options)


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(data_dir, tmp_path_factory) -> Path:
    """The project's tokenizer (byte-level BPE, ChatML template) trained on a little instruction text."""
    records = json.loads((data_dir / ALPACA_DEMO).read_text())[:300]
    tokenizer = new_tokenizer()
    tokenizer.train_from_iterator([f"{r['instruction']} {r['input']} {r['output']}" for r in records],
                                  trainer=trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIAL_TOKENS,
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                              show_progress=False))
    folder = tmp_path_factory.mktemp("tokenizer")
    save(tokenizer, folder, TokenizerParams(vocab_size=1000), {})
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


# --- readers ----------------------------------------------------------------------------------------------------

def test_alpaca_demo_file(data_dir):
    read = read_source(source(data_dir / ALPACA_DEMO))
    assert len(read.examples) == 999 and read.files[0]["records"] == 999 and read.bad_records == []
    records = json.loads((data_dir / ALPACA_DEMO).read_text())
    at, record = next((i, r) for i, r in enumerate(records) if r["input"].strip())
    user, assistant = read.examples[at].messages
    assert user == {"role": "user", "content": f"{record['instruction']}\n\n{record['input']}".strip()}
    assert assistant == {"role": "assistant", "content": record["output"].strip()}
    assert read.examples[0].id == example_id("src", read.examples[0].messages)
    assert len(read_source(source(data_dir / ALPACA_DEMO, max_examples=10)).examples) == 10


def test_self_instruct_instances_are_one_example_each(data_dir, tmp_path):
    path = data_dir / "sft/self-instruct/user_oriented_instructions.jsonl"
    tasks = [json.loads(line) for line in path.read_text().splitlines()]
    examples = read_source(source(path)).examples
    assert len(examples) == sum(len(t["instances"]) for t in tasks) == 252
    first = tasks[0]["instances"][0]
    assert examples[0].messages[0]["content"] == f"{tasks[0]['instruction']}\n\n{first['input']}".strip()
    assert examples[0].messages[1]["content"] == first["output"].strip()
    two = {"instruction": "Double it.", "instances": [{"input": "2", "output": "4"}, {"input": "", "output": "?"}]}
    examples = read_source(source(write_jsonl(tmp_path / "tasks.jsonl", [two]))).examples
    assert [e.messages[0]["content"] for e in examples] == ["Double it.\n\n2", "Double it."]


def test_oasst_trees_follow_the_best_ranked_reply(data_dir):
    examples = read_source(source(data_dir / OASST, "oasst")).examples
    assert len(examples) == 100
    first = json.loads((data_dir / OASST).read_text().splitlines()[0])["prompt"]
    best = min(first["replies"], key=lambda r: r["rank"])
    assert examples[0].messages == [{"role": "user", "content": first["text"].strip()},
                                    {"role": "assistant", "content": best["text"].strip()}]
    assert sum(len(e.messages) > 2 for e in examples) > 20  # multi-turn trees are followed past the first reply


def test_oasst_skips_deleted_and_unranked_replies_and_an_unanswered_last_question(tmp_path):
    def message(text, role, rank=None, replies=(), **flags):
        return {"text": text, "role": role, "rank": rank, "replies": list(replies), **flags}

    follow_up = message("And then?", "prompter", replies=[])  # nobody answered: not part of the example
    tree = {"prompt": message("Question?", "prompter", replies=[
        message("deleted best", "assistant", rank=0, deleted=True),
        message("unranked", "assistant"),
        message("second", "assistant", rank=2),
        message("first", "assistant", rank=1, replies=[follow_up]),
    ])}
    examples = read_source(source(write_jsonl(tmp_path / "trees.jsonl", [tree]), "oasst")).examples
    assert [m["content"] for m in examples[0].messages] == ["Question?", "first"]


def test_openai_and_sharegpt_messages(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [
        {"messages": [{"role": "system", "content": " Be kind. "}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!\n"}, {"role": "user", "content": "Bye"},
                      {"role": "assistant", "content": "Goodbye."}]},
        {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                           {"from": "gpt", "value": "A"}]},
    ])
    first, second = read_source(source(path, "messages")).examples
    assert [m["role"] for m in first.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert first.messages[0]["content"] == "Be kind." and first.messages[2]["content"] == "Hello!"
    assert second.messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                               {"role": "assistant", "content": "A"}]


def test_a_json_array_and_json_lines_read_alike_whatever_the_suffix(tmp_path):
    records = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(3)]
    array = tmp_path / "data.jsonl"  # misnamed: the content decides
    array.write_text(json.dumps(records, indent=2))
    lines = write_jsonl(tmp_path / "data.json", records)
    assert read_source(source(array)).examples == read_source(source(lines)).examples


# --- bad input ---------------------------------------------------------------------------------------------------

GOOD = {"instruction": "Add 2 and 2.", "output": "4"}
BAD_INPUT = {  # file content, format, the line named, words of the message
    "malformed_line": ([GOOD, GOOD, '{"instruction": "x", "output": '], "alpaca", 3, "malformed JSON"),
    "missing_field": ([GOOD, {"instruction": "No answer"}], "alpaca", 2, "no string 'output' field"),
    "unknown_role": ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                      {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}],
                     "messages", 2, "unknown role 'tool'"),
    "ends_with_user": ([{"messages": [{"role": "user", "content": "a"}]}], "messages", 1, "ending with the assistant"),
    "empty_turn": ([GOOD, GOOD, {"instruction": "Q", "output": "   "}], "alpaca", 3, "assistant turn is empty"),
    "not_json": (["id,text", "1,hello"], "alpaca", 1, "not JSON"),
    "not_an_object": (['"just a string"', GOOD], "alpaca", 1, "not str"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_stops_the_stage_naming_the_file_and_line(tmp_path, case):
    lines, format, line, words = BAD_INPUT[case]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(SftDataError) as error:
        read_source(source(path, format))
    assert f"{path}: line {line}: " in str(error.value) and words in str(error.value)


def test_a_broken_json_array_names_the_line_it_breaks_on(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"}\n]\n')
    with pytest.raises(SftDataError, match=rf"{path}: line 3: JSON array breaks off"):
        read_source(source(path))


def test_count_policy_drops_and_reports_bad_records_but_not_a_file_that_is_not_json(tmp_path):
    lines = [GOOD, '{"broken', {"instruction": "No answer"}, {"instruction": "Fine.", "output": "Yes."}]
    read = read_source(source(write_jsonl(tmp_path / "mixed.jsonl", lines)), on_bad_record="count")
    assert [e.messages[1]["content"] for e in read.examples] == ["4", "Yes."]
    assert [(b["line"], b["reason"]) for b in read.bad_records] == [(2, "malformed_json"), (3, "missing_field")]
    assert read.files[0] | {"url": None} == {"url": None, "records": 4, "examples": 2, "bad_records": 2}
    with pytest.raises(SftDataError, match="line 1: not JSON"):
        read_source(source(write_jsonl(tmp_path / "table.jsonl", ["a,b", "1,2"])), on_bad_record="count")


# --- deduplication and decontamination ----------------------------------------------------------------------------

def alpaca_example(instruction: str, output: str, name: str = "src") -> Example:
    messages = [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}]
    return Example(example_id(name, messages), name, messages)


def test_exact_and_near_duplicates_are_dropped_and_the_first_kept(data_dir):
    records = json.loads((data_dir / ALPACA_DEMO).read_text())
    long = next(r for r in records if len(r["output"].split()) > 200)
    reworded = long["output"].replace(" the ", " a ", 1)
    examples = [alpaca_example(long["instruction"], long["output"]),
                alpaca_example(long["instruction"].upper(), long["output"], "other"),  # same words: exact
                alpaca_example(long["instruction"], reworded),  # one word changed: near
                alpaca_example(records[1]["instruction"], records[1]["output"])]
    removed: list[dict] = []
    kept = deduplicate(examples, DedupParams(), removed)
    assert kept == [examples[0], examples[3]]
    assert [(r["id"], r["reason"], r["detail"]) for r in removed] == [
        (examples[1].id, "duplicate_exact", f"of {examples[0].id}"),
        (examples[2].id, "duplicate_near", f"of {examples[0].id}")]


@pytest.fixture(scope="module")
def alpaca_eval(data_dir) -> EvalSet:
    return EvalSet(name="alpaca_eval", format="json", fields=["instruction"], uri=str(data_dir / ALPACA_EVAL))


def test_decontamination_drops_a_planted_alpaca_eval_instruction_and_keeps_a_clean_one(data_dir, alpaca_eval):
    items, files = read_eval_set(alpaca_eval)
    decontaminator = Decontaminator({"alpaca_eval": items}, DecontaminationParams())
    assert len(items) == 805 and files == [str(data_dir / ALPACA_EVAL)]
    assert decontaminator.stats["alpaca_eval"]["n"] == 8  # its 5th percentile is 6 words, clamped to 8
    planted = json.loads((data_dir / ALPACA_EVAL).read_text())[100]["instruction"]
    hit = decontaminator.match(f"Please help me with this.\n\n{planted.upper()}!!\nThanks")
    # AlpacaEval has several "I like to host guests at my home ..." items: the report names one sharing the n-gram
    matched = next(item for item in items if item.id == hit.eval_item)
    assert hit.eval_set == "alpaca_eval" and hit.ngram in normalise(matched.text) and hit.ngram in normalise(planted)
    assert len(hit.ngram.split()) == 8
    assert decontaminator.match("Describe a process of making crepes, step by step, for a beginner cook.") is None


def test_short_items_match_only_as_whole_sequences():
    params = DecontaminationParams(min_item_words=3)
    items = [EvalItem("e line 1", "What is Atlantis?"), EvalItem("e line 2", "Hi there"),
             *(EvalItem(f"e line {i}", " ".join(f"w{i}x{j}" for j in range(20))) for i in range(3, 40))]
    decontaminator = Decontaminator({"e": items}, params)
    assert decontaminator.stats["e"] == {"items": 39, "n": 13, "unmatched_short_items": 1}  # "Hi there"
    assert decontaminator.match("Tell me: what is Atlantis, really?").eval_item == "e line 1"
    assert decontaminator.match("What is the lost city of Atlantis?") is None  # not contiguous
    assert decontaminator.match("Hi there, how are you?") is None  # below min_item_words


def test_eval_set_readers_on_the_shared_files(data_dir):
    def items(name, format, fields, path):
        return read_eval_set(EvalSet(name=name, format=format, fields=fields, uri=str(data_dir / path)))[0]

    mmlu = items("mmlu", "csv", ["question", "choices"], "eval/mmlu-redux/mmlu_redux/mmlu_*.csv")  # , and ; files
    assert len(mmlu) == 2900 and mmlu[0].id == "mmlu_abstract_algebra.csv row 1"
    hellaswag = items("hellaswag", "hellaswag", ["ctx", "endings"], "eval/hellaswag/hellaswag_val_first2000.txt.bz2")
    assert len(hellaswag) == 2000 and hellaswag[0].text.startswith("Roof shingle removal: A man is sitting on a roof.")
    assert len(items("piqa", "json", ["query", "choices"], "eval/llm-foundry/piqa.jsonl")) == 1838
    with pytest.raises(ValueError, match=r"winogrande.jsonl: line 1: no text field 'query'"):
        items("winogrande", "json", ["query"], "eval/llm-foundry/winogrande.jsonl")


# --- chat template and mask -------------------------------------------------------------------------------------

def trained_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    runs, current = [], []
    for token, trained in zip(ids, mask):
        if trained:
            current.append(token)
        elif current:
            runs, current = runs + [current], []
    return runs + [current] * bool(current)


def test_ids_are_the_chat_template_then_eos_and_the_mask_is_what_the_assistant_says(tokenizer):
    encoded = encode(tokenizer, CHAT)
    templated = tokenizer.apply_chat_template(CHAT, tokenize=True)["input_ids"]
    assert tokenizer.decode(templated[-1:]) == "\n"  # the template's newline after the last stop token ...
    assert encoded.input_ids == list(templated[:-1]) + [tokenizer.eos_token_id]  # ... is where the EOS goes
    runs = [tokenizer.decode(run, skip_special_tokens=False) for run in trained_runs(*encoded)]
    assert runs == ["Seven: 7 = 7 × 1, naïvely.<|im_end|>",
                    "Two.\n\nIt is the only even prime.<|im_end|><|end_of_text|>"]


def test_special_token_text_and_too_long_conversations_are_dropped_and_counted(tokenizer):
    examples = [alpaca_example("Fine?", "Yes."), alpaca_example("Break <|im_end|> it", "No."),
                alpaca_example("Long?", "word " * 300)]
    removed: list[dict] = []
    rows = tokenize(examples, tokenizer, SftDataParams(sources=[source("x")], max_seq_len=64), removed, False)
    assert [r["id"] for r in rows] == [examples[0].id]
    assert [r["reason"] for r in removed] == ["special_token_text", "too_long"]
    assert rows[0]["n_assistant_tokens"] == sum(rows[0]["assistant_mask"]) > 0


# --- the gate and the stage -------------------------------------------------------------------------------------

def test_params_yaml_section_validates_and_reads_the_shared_data_offline(data_dir):
    section = yaml.safe_load((REPO / "params.yaml").read_text())["sft_data"]
    params = SftDataParams.model_validate(section).for_data_dir(data_dir)
    assert params.tokenizer is None and params.on_bad_record == "error"
    for entry in [*params.sources, *params.decontamination.eval_sets]:
        assert entry.uri.startswith(str(data_dir)) and list(data_dir.glob(entry.offline)), entry.name


@pytest.fixture(scope="module")
def stage(data_dir, tokenizer_dir, tmp_path_factory):
    """The stage run on the Alpaca demo (with one planted AlpacaEval instruction), the OpenAssistant trees and a
    messages file; returns a function that runs it again into a fresh folder."""
    from tasks import sft_data
    from tasks.stage import StageContext

    folder = tmp_path_factory.mktemp("sources")
    planted = json.loads((data_dir / ALPACA_EVAL).read_text())[7]["instruction"]
    write_jsonl(folder / "planted.jsonl", [{"instruction": planted, "output": "A copied benchmark answer."}])
    write_jsonl(folder / "chats.jsonl", [{"messages": CHAT}])
    params = SftDataParams(
        sources=[source(data_dir / ALPACA_DEMO, max_examples=300).model_copy(update={"name": "alpaca"}),
                 SftSource(name="oasst", format="oasst", uri=str(data_dir / OASST)),
                 SftSource(name="mixed", format="alpaca", uri=str(folder / "planted.jsonl")),
                 SftSource(name="chats", format="messages", uri=str(folder / "chats.jsonl"))],
        decontamination=DecontaminationParams(eval_sets=[EvalSet(name="alpaca_eval", format="json",
                                                                 fields=["instruction"],
                                                                 uri=str(data_dir / ALPACA_EVAL))]),
        val_fraction=0.2, max_seq_len=768)

    def run():
        root = tmp_path_factory.mktemp("stage")
        ctx = StageContext(spec=None, params=params, inputs={"tokenizer": tokenizer_dir}, out_dir=root / "out",
                           report_dir=root / "reports", state_dir=root / "state")
        ctx.out_dir.mkdir()
        return ctx, sft_data.run(ctx, progress=False)

    return run


def test_stage_end_to_end(stage, tokenizer_dir):
    from tasks.gates import validate

    ctx, metrics = stage()
    out, reports = ctx.out_dir, ctx.report_dir
    assert sorted(p.name for p in out.iterdir()) == ["examples-train.parquet", "examples-val.parquet", "manifest.json"]
    result = validate("sft_examples", out, pattern="examples-*.parquet", params=ctx.params)
    assert result["success"] and result["checks"][0]["column"] == "id"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads((reports / "manifest.json").read_text())
    assert manifest["special_token_ids"] == {"eos": 1, "im_end": 4, "pad": 2} and manifest["vocab_size"] == 1000
    assert manifest["max_seq_len"] == 768 and manifest["tokenizer"] == str(tokenizer_dir)
    assert [f["url"] for s in manifest["sources"] for f in s["files"]][:2] == [ctx.params.sources[0].uri,
                                                                              ctx.params.sources[1].uri]
    assert manifest["by_source"]["mixed"]["contaminated"] == 1  # the planted "Who is Larry Page?"
    # AlpacaEval took some of its prompts from OpenAssistant: those trees go too
    assert metrics["contaminated_alpaca_eval"] == sum(s["contaminated"] for s in manifest["by_source"].values()) > 1
    contaminated = [json.loads(line) for line in (reports / "decontamination.jsonl").read_text().splitlines()]
    assert {c["source"] for c in contaminated} >= {"mixed"} and all(c["ngram"] for c in contaminated)
    # every example read is in the output or in removed.jsonl
    read = sum(s["read"] for s in manifest["by_source"].values())
    removed = (reports / "removed.jsonl").read_text().splitlines()
    assert read == sum(manifest["examples"].values()) + len(removed)
    assert metrics["examples_train"] == manifest["examples"]["train"] > 200 and metrics["examples_val"] > 30
    assert "| alpaca |" in (reports / "sft_data_card.md").read_text()

    train, val = (pd.read_parquet(out / f"examples-{split}.parquet") for split in ("train", "val"))
    assert not set(train["id"]) & set(val["id"]) and (train["split"] == "train").all()
    both = pd.concat([train, val])
    chat = both[both["source"] == "chats"].iloc[0]
    assert json.loads(chat["messages"]) == CHAT and chat["n_turns"] == 5
    assert chat["input_ids"].dtype == "int32" and chat["assistant_mask"].dtype == "int8"

    again, _ = stage()  # a rerun splits the same way
    for split in ("train", "val"):
        assert (pd.read_parquet(again.out_dir / f"examples-{split}.parquet")["id"].tolist()
                == pd.read_parquet(out / f"examples-{split}.parquet")["id"].tolist())


def test_gate_names_the_rows_that_break_the_contract(stage, tmp_path):
    from tasks.gates import GateFailed, validate

    ctx, _ = stage()
    train = pd.read_parquet(ctx.out_dir / "examples-train.parquet")
    bad = train.copy()
    bad.loc[0, "messages"] = json.dumps(json.loads(train.loc[0, "messages"])[:-1])  # the user speaks last
    bad.loc[1, "n_tokens"] = ctx.params.max_seq_len + 1
    bad.to_parquet(tmp_path / "examples-train.parquet", index=False)
    train.iloc[:1].to_parquet(tmp_path / "examples-val.parquet", index=False)  # one id in both splits
    with pytest.raises(GateFailed) as failed:
        validate("sft_examples", tmp_path, pattern="examples-*.parquet", params=ctx.params)
    message = str(failed.value)
    assert "column='roles'" in message and "column='last_role'" in message and train.loc[0, "id"] in message
    assert "column='n_tokens'" in message and train.loc[1, "id"] in message
    assert "unique_across_shards(column='id')" in message
