"""One model's evaluation, and the model-independent data checks: what an `evaluate` stage calls."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from components.curated import read_source
from components.evaluate.contamination import contamination_score, ngram_overlap, overlap_scores
from components.evaluate.judge import Judge, annotate, generate_answers, judge_prompt_digest, judged_scores, win_rates
from components.evaluate.multiple_choice import evaluate_task
from components.evaluate.params import EvalParams
from components.evaluate.perplexity import refuse_training_documents, text_set_scores
from components.evaluate.scoring import LogLikelihood
from components.evaluate.stats import digest
from components.evaluate.tasks import read_items, solved
from components.storage.digest import file_md5


def evaluate_model(model_dir: Path, params: EvalParams, name: str | None = None,
                   training_texts: Callable[[], Iterable[str]] | None = None) -> list[dict]:
    """Every measure in `params` for the model folder: score rows (components.evaluate.stats.Score fields).

    `training_texts` (a callable giving the pretraining mix's texts) makes bits per byte refuse text sets that
    hold training documents. The judged win rate needs `params.judge`'s endpoint to be up."""
    name = name or Path(model_dir).name
    scorer = LogLikelihood.load(model_dir, batch_tokens=params.batch_tokens, batching=params.batching)
    rows = []
    if params.text_sets:
        if training_texts is not None:
            sets = {source.name: [doc.text for doc in read_source(source)] for source in params.text_sets}
            refuse_training_documents(sets, training_texts())
        for source in params.text_sets:
            rows += text_set_scores(scorer, source, params.window_stride, name)
    for spec in params.tasks:
        rows += evaluate_task(scorer, spec, name)
        test = params.contamination
        if test is not None and (test.tasks is None or spec.task in test.tasks):
            examples = [solved(item) for item in read_items(spec.task, spec.uri)[:test.max_items]]
            rows.append(contamination_score(scorer, spec.task, examples, test.shards, test.permutations, test.seed,
                                            name, digest(examples)))
    if params.judge is not None:
        rows += judged(model_dir, params, name)
    return [score.row() for score in rows]


def judged(model_dir: Path, params: EvalParams, name: str) -> list:
    judge_params = params.judge
    reference = json.loads(Path(judge_params.reference.uri).read_text(encoding="utf-8"))[:judge_params.max_items]
    instructions = [record["instruction"] for record in reference]
    outputs = generate_answers(model_dir, instructions, judge_params.max_new_tokens)
    judge = Judge(judge_params.base_url, judge_params.model, Path(judge_params.cache_dir), judge_params.api_key_env)
    annotations = annotate(judge, instructions, [r["output"] for r in reference], outputs, judge_params.seed, name,
                           reference[0]["generator"])
    gamed = Path(judge_params.gamed_table.uri) if judge_params.gamed_table else None
    result = win_rates(annotations, gamed, judge_params.seed)
    task = f"alpaca_eval vs {reference[0]['generator']}"
    return judged_scores(result, task, name, judge_prompt_digest(), file_md5(Path(judge_params.reference.uri)))


def data_overlap(training_texts: Iterable[str], params: EvalParams, label: str = "training data") -> list[dict]:
    """Word n-gram overlap of each task's items with the training documents (model-independent)."""
    n = params.contamination.ngram if params.contamination else 13
    sets = {spec.task: [solved(item) for item in read_items(spec.task, spec.uri)] for spec in params.tasks}
    return [score.row() for score in overlap_scores(ngram_overlap(training_texts, sets, n), n, label)]
