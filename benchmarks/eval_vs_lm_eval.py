"""Multiple-choice scoring: our evaluator (components/evaluate) vs lm-evaluation-harness 0.4.13, side by side on
the same model, tasks and items: items/s, per-item prediction agreement, and the prompts each side built.

    DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python benchmarks/eval_vs_lm_eval.py \\
        [--model data/pretrain] [--mmlu-items 1000] [--hellaswag-items 1000] [--lm-eval-batch 32]

Tasks: MMLU-Redux in lm-eval's `mmlu` format (subject line, lettered options, " A".." D"; acc) and HellaSwag
(lm-eval's preprocessing, cloze; acc and acc_norm), 0-shot. lm-eval reads the same items from JSONL through
task YAMLs written here (`dataset_path: json`); its HellaSwag runs its own `process_docs` on our ctx_a/ctx_b
split of each line. Both sides run in this process, one after the other, each timed from the items in memory to
the predictions (lm-eval: `simple_evaluate` on an already loaded `HFLM`, so its dataset building counts; ours:
prompts, tokenization and scoring). The model defaults to the pipeline's base model, else a freshly initialised
one of the tiny preset's shape (depth 2, context 256, 4,096-token BPE trained on tinyshakespeare): agreement and
speed do not need a trained model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("DO_NOT_TRACK", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from components.evaluate.multiple_choice import predict  # noqa: E402
from components.evaluate.scoring import LogLikelihood  # noqa: E402
from components.evaluate.tasks import hellaswag_split, read_items, requests  # noqa: E402

MMLU_YAML = """task: mmlu_redux_lmeval
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {{{{subject}}}}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
"""
HELLASWAG_YAML = """task: hellaswag_lmeval
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {path}
validation_split: validation
output_type: multiple_choice
process_docs: !function utils.process_docs
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def tiny_model(out: Path) -> Path:
    """The tiny preset's shape, freshly initialised, with a 4,096-token BPE of tinyshakespeare."""
    from tokenizers import pre_tokenizers, trainers

    from components.model import ModelParams, build_model
    from components.tokenizer import SPECIAL_TOKENS, TokenizerParams
    from components.tokenizer.train import new_tokenizer, save

    text = (REPO.parent / "shared/data/curated/tinyshakespeare/input.txt").read_text()
    tokenizer = new_tokenizer()
    tokenizer.train_from_iterator([text], trainer=trainers.BpeTrainer(
        vocab_size=4096, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    save(tokenizer, out, TokenizerParams(vocab_size=4096, model_max_length=256), {})
    build_model(ModelParams(depth=2, seq_len=256), 4096, 0, 1, 2, seed=0).save_pretrained(out)
    return out


def lm_eval_docs(task: str, items, raw_lines: list[str] | None) -> list[dict]:
    if task == "mmlu":
        return [{"question": item.question, "choices": list(item.options), "answer": item.gold,
                 "subject": item.group.replace("_", " ")} for item in items]
    docs = []
    for item in items:
        number = int(item.id.rsplit(" ", 1)[1]) - 1
        head, ctx_b = hellaswag_split(raw_lines[6 * number])
        label, ctx_a = head.split(": ", 1)
        docs.append({"activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "endings": raw_lines[6 * number + 2:6 * number + 6], "label": str(item.gold)})
    return docs


def run_lm_eval(lm, task: str, docs: list[dict], folder: Path) -> tuple[list[dict], float]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    data = folder / f"{task}.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    if task == "mmlu":
        (folder / "mmlu.yaml").write_text(MMLU_YAML.format(path=data))
    else:
        (folder / "hellaswag.yaml").write_text(HELLASWAG_YAML.format(path=data))
        (folder / "utils.py").write_text("from lm_eval.tasks.hellaswag.utils import process_docs  # noqa: F401\n")
    name = f"{'mmlu_redux' if task == 'mmlu' else 'hellaswag'}_lmeval"
    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=[name], task_manager=TaskManager(include_path=str(folder)),
                          log_samples=True, num_fewshot=0)
    seconds = time.perf_counter() - start
    return sorted(out["samples"][name], key=lambda s: s["doc_id"]), seconds


def ours(scorer: LogLikelihood, items, formulation: str) -> tuple[object, float]:
    start = time.perf_counter()
    found = predict(scorer, items, formulation)
    return found, time.perf_counter() - start


def compare(task: str, items, formulation: str, samples: list[dict], found) -> dict:
    theirs = [np.array([float(r[0]) for r in s["filtered_resps"]]) for s in samples]
    lengths = [np.array([len(c) for c in s["doc"].get("choices", ["A", "B", "C", "D"])]) for s in samples]
    their_acc = np.array([int(np.argmax(ll)) for ll in theirs])
    their_norm = np.array([int(np.argmax(ll / n)) for ll, n in zip(theirs, lengths)])
    same_prompts = sum(
        [tuple(a) for a in s["arguments"]] == [tuple(r) for r in requests(item, formulation, [])]
        for s, item in zip(samples, items))
    result = {"items": len(items), "same_prompts": same_prompts,
              "acc_agree": int((their_acc == found.acc).sum()),
              "max_abs_ll_diff": float(max(np.abs(t - o).max() for t, o in zip(theirs, found.loglikelihoods))),
              "ours_acc": float((found.acc == [i.gold for i in items]).mean()),
              "lm_eval_acc": float(np.mean([s["acc"] for s in samples]))}
    if task == "hellaswag":
        result |= {"acc_norm_agree": int((their_norm == found.acc_norm).sum()),
                   "ours_acc_norm": float((found.acc_norm == [i.gold for i in items]).mean()),
                   "lm_eval_acc_norm": float(np.mean([s["acc_norm"] for s in samples]))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "data/pretrain")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR",
                                                                             REPO.parent / "shared/data")))
    parser.add_argument("--mmlu-items", type=int, default=1000)
    parser.add_argument("--hellaswag-items", type=int, default=1000)
    parser.add_argument("--lm-eval-batch", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lm_eval.models.huggingface import HFLM

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir = args.model if (args.model / "config.json").exists() else tiny_model(folder / "model")
        eval_dir = args.data_dir / "eval"
        hellaswag_file = eval_dir / "hellaswag/hellaswag_val_first2000.txt.bz2"
        tasks = {"mmlu": ("letter", read_items("mmlu_redux", str(eval_dir / "mmlu-redux/mmlu_redux/*.csv"))),
                 "hellaswag": ("cloze", read_items("hellaswag", str(hellaswag_file)))}
        rng = np.random.default_rng(0)
        counts = (args.mmlu_items, args.hellaswag_items)
        tasks = {name: (formulation, [items[i] for i in sorted(rng.choice(len(items), min(n, len(items)), False))])
                 for (name, (formulation, items)), n in zip(tasks.items(), counts)}
        import bz2
        raw = bz2.open(hellaswag_file, "rt").read().splitlines()
        lm = HFLM(pretrained=str(model_dir), device="cpu", batch_size=args.lm_eval_batch, dtype="float32")
        scorers = {batching: LogLikelihood.load(model_dir, batch_tokens=args.batch_tokens, batching=batching)
                   for batching in ("shared_context", "padded")}
        print(f"model: {model_dir} ({sum(p.numel() for p in lm.model.parameters()):,} parameters, "
              f"vocabulary {lm.model.config.vocab_size}, window {scorers['padded'].window}), "
              f"{torch.get_num_threads()} threads, lm-eval batch {args.lm_eval_batch}, ours {args.batch_tokens} "
              f"tokens per forward\n")
        print("| task | items | lm-eval items/s | ours shared-context items/s | ours padded items/s | speed-up "
              "(shared) | same prompts | acc agree | acc_norm agree | max abs ll diff | acc lm-eval / ours |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for task, (formulation, items) in tasks.items():
            samples, lm_seconds = run_lm_eval(lm, task, lm_eval_docs(task, items, raw), folder)
            timed = {batching: ours(scorer, items, formulation) for batching, scorer in scorers.items()}
            found, shared_seconds = timed["shared_context"]
            result = compare(task, items, formulation, samples, found)
            n = len(items)
            norm = f"{result['acc_norm_agree']}/{n}" if "acc_norm_agree" in result else "-"
            accs = f"{result['lm_eval_acc']:.4f} / {result['ours_acc']:.4f}"
            print(f"| {task} ({formulation}) | {n} | {n / lm_seconds:.1f} | {n / shared_seconds:.1f} | "
                  f"{n / timed['padded'][1]:.1f} | {lm_seconds / shared_seconds:.2f}x | {result['same_prompts']}/{n} | "
                  f"{result['acc_agree']}/{n} | {norm} | {result['max_abs_ll_diff']:.1e} | {accs} |", flush=True)


if __name__ == "__main__":
    main()
