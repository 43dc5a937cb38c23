"""Judged win rate, AlpacaEval style: the model answers instructions, an LLM judge behind an OpenAI-compatible
endpoint picks the better of its answer and a reference model's, and the win rate and the length-controlled
win rate are computed by the `alpaca-eval` package (0.6.6) itself.

- Position: a coin seeded by (seed, instruction) decides which answer the judge sees first (judges favour a
  position); the annotation records it and the judge's raw reply.
- Cache: each judge request (model, messages, decoding settings; not the endpoint's address) is named by its
  sha256 and its response kept in `cache_dir/<digest>.json` by the project's cached client
  (components/openai_client.CachedChat): a rerun, or another model judged against the same reference, pays only
  for what is new. The API key is read from the environment variable whose NAME is a parameter; it is never
  written.
- Preferences follow AlpacaEval: 1 = the reference (output_1) wins, 2 = the model (output_2) wins; a reply
  naming neither is left out (counted in the note).
- Win rate: `alpaca_eval.metrics.get_winrate` (ties count half), with a seeded bootstrap 95% interval over
  instructions. Length-controlled win rate: `get_length_controlled_winrate`. The package downloads
  `df_gamed.csv` (instruction difficulty + the gamed baselines' annotations its published GLM,
  length_controlled_v1, regularises with) from the Hugging Face hub on every call; here its download is pointed
  at the local file named in params. Without that file the package's `length_controlled_minimal` GLM runs
  (length term + intercept: no difficulty, no gamed baselines), and the score says which GLM produced it. It has
  no interval: the package's `lc_standard_error` is the spread of the per-instruction predictions, not the GLM's
  fitting error (0 for the minimal GLM, whose prediction is one number); a bootstrap would refit the GLM per
  resample (not done).
  Annotations are indexed by the instruction's position in the reference file: the GLM looks instructions'
  difficulty up by that index.
- Too few verdicts: a judge whose replies name no output (an untrained or misconfigured model) has no win rate,
  and the LC GLM's cross-validated fit needs a verdict per fold (5). A number that cannot be computed is left out
  of the scores and its reason (how many replies named an output, of how many asked) goes into the notes and the
  log, rather than the package crashing on an empty or tiny sample.
"""
from __future__ import annotations

import io
import logging
import random
import re
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from components.evaluate.stats import Score, bootstrap, digest
from components.model.load import load_pretrained
from components.openai_client import CachedChat

SYSTEM = ("You are a highly efficient assistant, who evaluates and selects the best large language model based on "
          "the quality of their responses to a given instruction.")
PROMPT = ("Select the output, (a) or (b), that best answers the instruction from a human perspective: helpful, "
          "accurate, harmless; the order in which the outputs are listed says nothing.\n\n"
          "## Instruction\n\n{instruction}\n\n## Output (a)\n\n{output_a}\n\n## Output (b)\n\n{output_b}\n\n"
          "## Answer\n\nReply with exactly 'Output (a)' or 'Output (b)'.")
VERDICT = re.compile(r"Output \(([ab])\)")
JUDGE_SETTINGS = {"temperature": 0.0, "max_tokens": 16}
log = logging.getLogger(__name__)


class Judge(CachedChat):
    """An LLM judge at an OpenAI-compatible endpoint, every reply cached on disk by its request's digest."""

    def __init__(self, base_url: str, model: str, cache_dir: Path, api_key_env: str | None = None):
        super().__init__(base_url, model, api_key_env, cache_dir)

    @property
    def requests_sent(self) -> int:
        return self.usage.requests["made"]

    def reply(self, messages: list[dict]) -> str:
        return self.complete(messages, **JUDGE_SETTINGS).text


def annotate(judge: Judge, instructions: list[str], reference: list[str], outputs: list[str], seed: int,
             model: str, reference_name: str) -> pd.DataFrame:
    """One AlpacaEval annotation per instruction (index = its position in the reference file)."""
    rows = []
    for instruction, ref, out in zip(instructions, reference, outputs):
        model_first = random.Random(f"{seed}:{instruction}").random() < 0.5
        a, b = (out, ref) if model_first else (ref, out)
        raw = judge.reply([{"role": "system", "content": SYSTEM},
                           {"role": "user", "content": PROMPT.format(instruction=instruction, output_a=a, output_b=b)}])
        found = VERDICT.search(raw)
        model_won = found is not None and (found.group(1) == "a") == model_first
        rows.append({"instruction": instruction, "output_1": ref, "output_2": out, "generator_1": reference_name,
                     "generator_2": model, "annotator": judge.model, "model_first": model_first,
                     "raw_judgement": raw, "preference": (2.0 if model_won else 1.0) if found else np.nan})
    return pd.DataFrame(rows)


def win_rates(annotations: pd.DataFrame, gamed_table: Path | None = None, seed: int = 0) -> dict:
    """{win_rate, win_rate_ci, lc_win_rate, glm, n, asked, unparsed, avg_length, unavailable} in percent, from the
    package. A rate too few verdicts allow is None and `unavailable` maps its measure to the reason."""
    from alpaca_eval.metrics import get_winrate, glm_winrate

    glm = "length_controlled_v1" if gamed_table else "length_controlled_minimal"
    valid = annotations["preference"].dropna().replace({0.0: 1.5}) - 1
    asked, folds = len(annotations), glm_winrate.GLM_INFO[glm]["kwargs"]["n_splits"]
    parsed = f"{len(valid)} of {asked} judge replies named an output"
    result = {"win_rate": None, "win_rate_ci": None, "lc_win_rate": None, "glm": glm, "n": int(len(valid)),
              "asked": asked, "unparsed": asked - int(len(valid)), "unavailable": {},
              "avg_length": float(annotations["output_2"].str.len().mean())}
    if len(valid) == 0:
        result["unavailable"]["win_rate"] = f"not available: {parsed}"
    else:
        result["win_rate"] = float(get_winrate(annotations.copy())["win_rate"])
        result["win_rate_ci"] = tuple(100 * v for v in bootstrap(valid.to_numpy(), seed))
    if len(valid) < folds:
        result["unavailable"]["lc_win_rate"] = f"not available: {parsed}; the {glm} GLM's {folds}-fold fit needs {folds}"
    else:
        table = Path(gamed_table).read_text() if gamed_table else _placeholder_table(annotations)
        with (mock.patch.object(glm_winrate, "hf_hub_download", lambda **_: io.StringIO(table)),
              warnings.catch_warnings()):
            warnings.simplefilter("ignore")  # the package's sklearn calls warn about deprecated arguments
            metrics = glm_winrate.get_length_controlled_winrate(annotations.copy(), glm_name=glm,
                                                                save_weights_dir=None, is_warn_extreme_changes=False)
        result["lc_win_rate"] = float(metrics["length_controlled_winrate"])
    for measure, reason in result["unavailable"].items():
        log.warning("judged %s %s", measure, reason)
    return result


def _placeholder_table(annotations: pd.DataFrame) -> str:
    """What length_controlled_minimal reads of df_gamed.csv: nothing but one row per instruction index (the
    package looks every instruction's difficulty up even when its formula does not use it)."""
    size = int(annotations.index.max()) + 1
    return pd.DataFrame({"model": "none", "index": range(size), "instruction_difficulty": 0.0}).to_csv(index=False)


def judged_scores(result: dict, task: str, model: str, prompt_digest: str, items_digest: str) -> list[Score]:
    """The win rate and LC win rate where `result` has them; the answers' mean length always, its note saying
    which rate is not available and why."""
    common = {"task": task, "n": result["n"], "chance": 50.0, "prompt_digest": prompt_digest,
              "items_digest": items_digest}
    unparsed = f"{result['unparsed']} replies named neither output" if result["unparsed"] else ""
    scores = []
    if result["win_rate"] is not None:
        scores.append(Score(model, "win_rate", value=result["win_rate"], ci_low=result["win_rate_ci"][0],
                            ci_high=result["win_rate_ci"][1], interval="bootstrap", note=unparsed, **common))
    if result["lc_win_rate"] is not None:
        scores.append(Score(model, "lc_win_rate", value=result["lc_win_rate"],
                            note=f"GLM {result['glm']}, no interval", **common))
    missing = "; ".join(f"{measure} {reason}" for measure, reason in result["unavailable"].items())
    return scores + [Score(model, "avg_length", value=result["avg_length"], note="; ".join(
        ["characters per answer", *([missing] if missing else [])]), **{**common, "chance": None, "n": result["asked"]})]


def judge_prompt_digest() -> str:
    return digest({"system": SYSTEM, "prompt": PROMPT, "settings": JUDGE_SETTINGS, "verdict": VERDICT.pattern})


def generate_answers(model_dir: Path, instructions: list[str], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy answers in the model's chat template, stopping at the end of the assistant's turn."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left", truncation_side="left")
    model = load_pretrained(AutoModelForCausalLM, model_dir).eval()
    stops = [i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")) if i is not None]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True) for text in instructions]
    window = model.config.max_position_embeddings
    new_tokens = min(max_new_tokens, window // 2)  # a long instruction keeps its last half-window, cut from the left
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False, truncation=True,
                          max_length=window - new_tokens)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id)
        answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return [answer.strip() for answer in answers]
