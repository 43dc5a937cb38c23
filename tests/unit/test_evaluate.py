"""The evaluation science: continuation scoring equals a plain forward pass, bits per byte, the readers and prompts,
multiple-choice rows, the judged win rate against the published AlpacaEval numbers, the judge's cache and
position coin, planted contamination, the report card, and per-item agreement with lm-evaluation-harness."""
from __future__ import annotations

import io
import json
import math
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

for _var in ("DO_NOT_TRACK", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import pre_tokenizers, trainers

from components.curated import CuratedSource
from components.evaluate import (
    EvalTextInTraining,
    Judge,
    LogLikelihood,
    TaskSpec,
    annotate,
    ngram_overlap,
    permutation_test,
    read_items,
    refuse_training_documents,
    report_card,
    requests,
    win_rates,
)
from components.evaluate.multiple_choice import evaluate_task, shots_for, split_pool
from components.evaluate.perplexity import document_nll, text_set_scores, windows
from components.evaluate.stats import wilson
from components.evaluate.tasks import hellaswag_preprocess, letter_prompt, solved
from components.model import ModelParams, build_model
from components.tokenizer import SPECIAL_TOKENS, TokenizerParams
from components.tokenizer.train import new_tokenizer, save

VOCAB = 512
TEXT = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: "
        "once or twice she had peeped into the book her sister was reading, but it had no pictures or "
        "conversations in it, 'and what is the use of a book,' thought Alice 'without pictures or conversations?' ")


def make_model(folder, seq_len: int, seed: int = 1, text: str = TEXT * 20):
    tokenizer = new_tokenizer()
    tokenizer.train_from_iterator([text], trainer=trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    save(tokenizer, folder, TokenizerParams(vocab_size=VOCAB, model_max_length=seq_len), {})
    model = build_model(ModelParams(depth=2, aspect_ratio=32, head_dim=16, seq_len=seq_len), VOCAB, 0, 1, 2, seed=seed)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("tiny"), seq_len=256)


@pytest.fixture(scope="module")
def scorer(tiny):
    return LogLikelihood.load(tiny, batch_tokens=512)


@pytest.fixture(scope="module")
def eval_dir(data_dir):
    return data_dir / "eval"


def plain_forward(scorer: LogLikelihood, context: str, continuation: str) -> float:
    """lm-eval's computation, one pair at a time: the last window + 1 tokens, log-softmax over every position."""
    context_ids, continuation_ids = scorer.encode_pair(context, continuation)
    ids = (context_ids + continuation_ids)[-(scorer.window + 1):][:-1]
    with torch.no_grad():
        log_probs = scorer.model(torch.tensor([ids])).logits[0].log_softmax(-1)
    first = len(ids) - len(continuation_ids) + 1
    return sum(log_probs[first - 1 + j, token].item() for j, token in enumerate(continuation_ids))


@pytest.mark.parametrize("batching", ["shared_context", "padded"])
def test_batched_scores_equal_one_plain_forward_per_pair(scorer, batching):
    question = "Alice was beginning to get very tired of sitting by her sister"
    pairs = [(question, " on the bank"), (question, " A"), (question, " and of having nothing to do"),
             ("once or twice ", "she had peeped"),  # the trailing space moves to the continuation
             ("", "Alice"),  # an empty context is the BOS token
             ("the book " * 40, " pictures or conversations")]  # longer than the window: cut from the left
    scorer.batching = batching
    got = scorer.score(pairs)
    assert got == pytest.approx([plain_forward(scorer, *pair) for pair in pairs], abs=1e-4)
    assert scorer.encode_pair("once or twice ", "she")[1] == scorer.tokenizer.encode("once or twice she")[
        len(scorer.tokenizer.encode("once or twice")):]


def test_sliding_windows_score_every_token_once_and_bits_per_byte(scorer, tmp_path):
    ids = list(range(50))
    for window, stride in [(8, 4), (8, 8), (8, 1), (64, 32)]:
        pairs = windows(ids, window, stride)
        assert [t for _, scored in pairs for t in scored] == ids[1:]
        assert all(context and len(context) + len(scored) <= window + 1 for context, scored in pairs)
    short = "Alice was beginning to get very tired."
    nll, tokens = document_nll(scorer, [short], 0.5)
    assert -nll[0] == pytest.approx(plain_forward(scorer, "", short), abs=1e-4)  # BOS, then every token
    long_text = TEXT * 6  # longer than the 256-token window
    (tmp_path / "a.txt").write_text(long_text)
    source = CuratedSource(name="alice", format="text", domain="fiction", uri=str(tmp_path / "a.txt"))
    bpb, perplexity = text_set_scores(scorer, source, 0.5, "tiny")
    nll, tokens = document_nll(scorer, [long_text.strip()], 0.5)
    assert tokens[0] > scorer.window
    assert bpb.value == pytest.approx(nll[0] / math.log(2) / len(long_text.strip().encode()))
    assert perplexity.value == pytest.approx(math.exp(nll[0] / tokens[0]))
    # an untrained model: close to log2(512) bits per token, spread over the bytes a token stands for
    assert bpb.value == pytest.approx(math.log2(VOCAB) * tokens[0] / len(long_text.strip().encode()), rel=0.2)


def test_eval_text_found_in_the_training_documents_is_refused():
    training = ["a book without pictures", "  the rabbit hole \n", "something else"]
    refuse_training_documents({"held_out": ["a new text"]}, training)
    with pytest.raises(EvalTextInTraining, match=r"rabbit \(1 of 2 documents\)"):
        refuse_training_documents({"rabbit": ["the rabbit hole", "unseen"], "held_out": ["x"]}, iter(training))


def test_readers_read_every_shared_eval_file(eval_dir):
    mmlu = read_items("mmlu_redux", str(eval_dir / "mmlu-redux/mmlu_redux/*.csv"))
    assert len(mmlu) == 2900 and sum(item.ok for item in mmlu) == 2738  # "ok", "OK" and "Ok" all mean ok
    assert {len(item.options) for item in mmlu} == {4} and len({item.group for item in mmlu}) == 29
    counts = {task: len(read_items(task, str(eval_dir / f"llm-foundry/{task}.jsonl"))) for task in
              ("arc_easy", "arc_challenge", "piqa", "winogrande", "openbook_qa", "copa", "commonsense_qa", "boolq")}
    assert counts == {"arc_easy": 2376, "arc_challenge": 1172, "piqa": 1838, "winogrande": 1267, "openbook_qa": 500,
                      "copa": 100, "commonsense_qa": 1221, "boolq": 3270}
    wino = read_items("winogrande", str(eval_dir / "llm-foundry/winogrande.jsonl"))[0]
    assert wino.options == ("Sarah", "Maria") and wino.question.endswith("so _ always got the easier cases.")
    assert requests(wino, "cloze", [])[1] == ("Sarah was a much better surgeon than Maria so Maria",
                                               " always got the easier cases.")  # partial scoring
    csqa = read_items("commonsense_qa", str(eval_dir / "llm-foundry/commonsense_qa.jsonl"))[0]
    assert csqa.options == ("bank", "department store", "mall", "new york") and "Choices" not in csqa.question
    hellaswag = read_items("hellaswag", str(eval_dir / "hellaswag/hellaswag_val_first2000.txt.bz2"))
    assert len(hellaswag) == 2000 and hellaswag[0].question == "Roof shingle removal: A man is sitting on a roof. He"
    assert hellaswag_preprocess(" How to x [title] Do it. [step] Now ") == "How to x. Do it. Now"


def test_letter_prompt_is_lm_evals_mmlu_and_few_shot_examples_are_never_scored(eval_dir):
    items = read_items("mmlu_redux", str(eval_dir / "mmlu-redux/mmlu_redux/mmlu_astronomy.csv"))
    first = items[0]
    context, continuation = requests(first, "letter", [])[2]
    assert context == (f"The following are multiple choice questions (with answers) about astronomy.\n\n"
                       f"{first.question}\nA. {first.options[0]}\nB. {first.options[1]}\nC. {first.options[2]}\n"
                       f"D. {first.options[3]}\nAnswer:") and continuation == " C"
    pools, scored = split_pool(items, 5)
    assert pools["astronomy"] == items[:5] and scored == items[5:]
    shots = shots_for(scored[0], pools, 3, seed=0)
    assert shots == shots_for(scored[0], pools, 3, seed=0) and set(shots) <= set(items[:5])
    prompt = requests(scored[0], "cloze", shots)[0][0]
    assert prompt.startswith("The following are") and prompt.count("The following") == 1  # the header once
    assert prompt.count("\n\nQuestion: ") == 4 and solved(shots[0], "cloze") in prompt  # 3 examples, the question
    assert letter_prompt(scored[0]) in requests(scored[0], "letter", shots)[0][0]


def test_task_rows_carry_interval_chance_and_digests(scorer, eval_dir):
    spec = TaskSpec(task="mmlu_redux", uri=str(eval_dir / "mmlu-redux/mmlu_redux/mmlu_a*.csv"), shots=[0, 1],
                    fewshot_pool=2, max_items=40)
    rows = evaluate_task(scorer, spec, "tiny")
    # 2 shot counts x (cloze: acc, acc_norm; letter: acc) x (all, ok)
    assert len(rows) == 12 and {r.chance for r in rows} == {0.25}
    for row in rows:
        assert row.ci_low <= row.value <= row.ci_high and row.interval == "wilson"
        assert row.n == (40 if row.subset == "all" else 37)  # the seeded sample holds 3 flagged questions
    digests = {(r.formulation, r.shots): r.prompt_digest for r in rows}
    assert len(set(digests.values())) == 4  # the format and the shot count both change the digest
    assert len({r.items_digest for r in rows}) == 2  # all / ok: the same items whatever the prompt
    assert wilson(0, 10)[0] == 0 and wilson(10, 10)[1] == pytest.approx(1)


@pytest.fixture(scope="module")
def alpaca(eval_dir):
    folder = eval_dir / "alpaca_eval"
    board = pd.read_csv(folder / "alpaca_eval_gpt4_leaderboard.csv", index_col=0)
    return folder, board


@pytest.mark.parametrize("model", ["alpaca-7b", "alpaca-farm-ppo-human"])
def test_win_rate_is_the_leaderboards_and_lc_is_the_packages(alpaca, model, tmp_path, monkeypatch):
    from alpaca_eval.metrics import glm_winrate

    folder, board = alpaca
    annotations = pd.DataFrame(json.loads((folder / f"results/{model}/annotations_alpaca_eval_gpt4.json").read_text()))
    annotations["preference"] = annotations["preference"].astype(float)
    ours = win_rates(annotations)
    assert ours["win_rate"] == pytest.approx(board.loc[model, "win_rate"], rel=1e-12)  # 26.4596 / 41.2422
    assert ours["win_rate_ci"][0] < ours["win_rate"] < ours["win_rate_ci"][1]
    assert ours["glm"] == "length_controlled_minimal" and ours["n"] == 805

    # A stand-in df_gamed.csv (the real one needs the hub): difficulty per instruction, two "gamed" baselines.
    rng = np.random.default_rng(0)
    gamed = pd.concat([pd.DataFrame({"model": name, "index": range(805), "instruction_difficulty": difficulty,
                                     "preference": rng.uniform(size=805), "not_gamed_baseline": False,
                                     "std_delta_len": sign * np.abs(rng.normal(size=805))})
                       for name, sign, difficulty in [("concise", -1, rng.normal(size=805)), ("verbose", 1, None)]])
    gamed["instruction_difficulty"] = gamed.groupby("index")["instruction_difficulty"].transform("first")
    table = tmp_path / "df_gamed.csv"
    gamed.to_csv(table, index=False)
    with_table = win_rates(annotations, table)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **_: str(table))  # where the package reads it
    package = glm_winrate.get_length_controlled_winrate(annotations.copy(), save_weights_dir=None)
    assert with_table["glm"] == "length_controlled_v1"
    assert with_table["lc_win_rate"] == package["length_controlled_winrate"]
    assert with_table["lc_win_rate"] != ours["lc_win_rate"]


def judged_annotations(preferences: list[float]) -> pd.DataFrame:
    """Annotations as `annotate` makes them; NaN: a reply that named neither output."""
    count = len(preferences)
    return pd.DataFrame({"instruction": [f"Name the number {i}." for i in range(count)],
                         "output_1": ["reference answer " * (i + 1) for i in range(count)],
                         "output_2": ["mine " * (2 * i + 1) for i in range(count)],
                         "generator_1": "ref", "generator_2": "tiny", "annotator": "untrained-judge",
                         "preference": preferences})


def test_a_judge_without_usable_verdicts_reports_the_win_rates_not_available_with_the_count(tmp_path):
    from components.evaluate.judge import judged_scores
    from tasks.gates import validate

    silent = win_rates(judged_annotations([math.nan] * 8))  # an untrained judge: no reply names an output
    assert silent["win_rate"] is None and silent["lc_win_rate"] is None and silent["n"] == 0
    assert "0 of 8 judge replies named an output" in silent["unavailable"]["win_rate"]
    scores = judged_scores(silent, "alpaca_eval vs ref", "tiny", "p", "i")
    assert [s.measure for s in scores] == ["avg_length"] and scores[0].n == 8
    assert "win_rate not available: 0 of 8" in scores[0].note and "lc_win_rate not available" in scores[0].note
    card = report_card([s.row() for s in scores], tmp_path / "card")
    assert "win_rate not available: 0 of 8" in card["markdown"].read_text() and "winrate_plot" not in card
    pd.DataFrame([s.row() for s in scores]).to_parquet(tmp_path / "scores.parquet", index=False)
    assert validate("eval_scores", tmp_path, "scores.parquet")["success"]  # the stage still publishes

    few = win_rates(judged_annotations([2.0, 1.0, 2.0] + [math.nan] * 5))  # too few to cross-validate the GLM
    assert few["win_rate"] == pytest.approx(200 / 3) and few["n"] == 3 and few["lc_win_rate"] is None
    assert "3 of 8 judge replies named an output" in few["unavailable"]["lc_win_rate"]
    assert [s.measure for s in judged_scores(few, "t", "tiny", "p", "i")] == ["win_rate", "avg_length"]


class FakeJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that always prefers the first output it is shown."""

    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.seen.append({"auth": self.headers.get("Authorization"), "body": body})
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "Output (a)"}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_judge_randomises_position_caches_replies_and_never_stores_the_key(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("JUDGE_KEY_FOR_TEST", "sk-secret-123")
        judge = Judge(f"http://127.0.0.1:{server.server_port}/v1", "judge-model", tmp_path / "cache",
                      "JUDGE_KEY_FOR_TEST")
        instructions = [f"Write a poem about the number {i}." for i in range(12)]
        table = annotate(judge, instructions, ["ref"] * 12, ["mine"] * 12, seed=0, model="tiny", reference_name="ref")
        assert judge.requests_sent == 12 and FakeJudge.seen[0]["auth"] == "Bearer sk-secret-123"
        assert 0 < table["model_first"].sum() < 12  # both positions occur
        assert ((table["preference"] == 2.0) == table["model_first"]).all()  # the judge picks (a), whoever it is
        assert (table["raw_judgement"] == "Output (a)").all()
        again = annotate(Judge(judge.base_url, judge.model, tmp_path / "cache", "JUDGE_KEY_FOR_TEST"),
                         instructions, ["ref"] * 12, ["mine"] * 12, seed=0, model="tiny", reference_name="ref")
        assert len(FakeJudge.seen) == 12 and again.equals(table)  # a rerun pays nothing
        assert not any("sk-secret" in path.read_text() for path in (tmp_path / "cache").iterdir())
        monkeypatch.delenv("JUDGE_KEY_NOT_SET", raising=False)
        with pytest.raises(RuntimeError, match=r"\$JUDGE_KEY_NOT_SET"):
            annotate(Judge(judge.base_url, judge.model, tmp_path / "other", "JUDGE_KEY_NOT_SET"),
                     instructions[:1], ["ref"], ["mine"], seed=0, model="tiny", reference_name="ref")
    finally:
        server.shutdown()


def train(folder, corpus: str, steps: int, seq_len: int) -> LogLikelihood:
    """A plain PyTorch loop on random windows of the corpus (seconds on CPU)."""
    scorer = LogLikelihood.load(folder, batch_tokens=4096)
    ids = torch.tensor(scorer.document_ids(corpus))
    model = scorer.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq_len - 1, (16,), generator=generator)
        batch = torch.stack([ids[s:s + seq_len + 1] for s in starts])
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scorer.model.eval()
    return scorer


def test_planted_contamination_is_detected_and_a_clean_benchmark_is_not(eval_dir, tmp_path):
    # ARC-Easy, not COPA: COPA's neighbours share premises, so its canonical order is likelier even unseen
    # (not exchangeable: the test's assumption fails and it says "contaminated").
    items = read_items("arc_easy", str(eval_dir / "llm-foundry/arc_easy.jsonl"))
    leaked, unseen = [solved(i) for i in items[:40]], [solved(i) for i in items[40:80]]
    background = (eval_dir.parent / "curated/tinyshakespeare/input.txt").read_text()[:20000].split("\n\n")
    rng = np.random.default_rng(0)
    corpus = [*background]
    for _ in range(40):  # the benchmark file, in its canonical order, many times across the crawl
        corpus.insert(int(rng.integers(0, len(corpus))), "\n".join(leaked))
    folder = make_model(tmp_path / "planted", seq_len=128, text="\n".join(corpus[:200]))
    scorer = train(folder, "\n\n".join(corpus), steps=60, seq_len=64)
    planted = permutation_test(scorer, leaked, shards=8, permutations=10)
    clean = permutation_test(scorer, unseen, shards=8, permutations=10)
    assert planted["p_value"] < 0.01 < clean["p_value"], (planted, clean)
    overlap = ngram_overlap(corpus, {"leaked": leaked, "unseen": unseen}, n=8)
    assert overlap["leaked"]["items_overlapping"] == 40 and overlap["unseen"]["items_overlapping"] == 0


def test_report_card_writes_the_table_csv_and_plots(tmp_path):
    rows = [{"model": model, "measure": measure, "task": task, "value": value, "ci_low": value - 0.05,
             "ci_high": value + 0.05, "interval": "wilson", "chance": chance, "n": 100, "formulation": form,
             "shots": 0, "subset": "all", "prompt_digest": "p1", "items_digest": "i1", "note": ""}
            for model in ("base", "sft")
            for measure, task, value, chance, form in [("acc", "arc_easy", 0.3, 0.25, "cloze"),
                                                       ("bpb", "wikitext", 1.9, None, ""),
                                                       ("win_rate", "alpaca_eval", 12.0, 50.0, ""),
                                                       ("avg_length", "alpaca_eval", 300.0, None, "")]]
    paths = report_card(rows, tmp_path)
    table = paths["markdown"].read_text()
    assert "| acc | arc_easy | cloze | 0 | all | 0.250 | 0.300 [0.250, 0.350] | 0.300 [0.250, 0.350] | p1/i1 |" in table
    assert len(pd.read_csv(paths["csv"])) == 8
    assert all(paths[name].stat().st_size > 1000 for name in ("scores_plot", "bpb_plot", "winrate_plot"))


def test_predictions_equal_lm_evaluation_harness(tiny, eval_dir, tmp_path):
    pytest.importorskip("lm_eval")
    import bz2
    import sys

    from lm_eval.models.huggingface import HFLM

    sys.path.insert(0, str(eval_dir.parents[2] / "main"))
    from benchmarks.eval_vs_lm_eval import compare, lm_eval_docs, run_lm_eval
    from components.evaluate.multiple_choice import predict

    lm = HFLM(pretrained=str(tiny), device="cpu", batch_size=8, dtype="float32")
    ours = LogLikelihood.load(tiny)
    hellaswag_file = eval_dir / "hellaswag/hellaswag_val_first2000.txt.bz2"
    raw = bz2.open(hellaswag_file, "rt").read().splitlines()
    for task, formulation, items in [
            ("mmlu", "letter", read_items("mmlu_redux", str(eval_dir / "mmlu-redux/mmlu_redux/mmlu_a*.csv"))[::10]),
            ("hellaswag", "cloze", read_items("hellaswag", str(hellaswag_file))[:30])]:
        samples, _ = run_lm_eval(lm, task, lm_eval_docs(task, items, raw), tmp_path)
        result = compare(task, items, formulation, samples, predict(ours, items, formulation))
        assert result["same_prompts"] == result["acc_agree"] == len(items), result
        assert result.get("acc_norm_agree", len(items)) == len(items)
