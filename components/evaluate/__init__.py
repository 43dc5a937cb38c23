"""Evaluation science: every model scored the way the field scores, in rows one report card gathers.

- `evaluate_model(model_dir, EvalParams, name)` -> score rows: bits per byte and perplexity on held-out text
  (refusing text that is in the training documents), multiple choice in both formulations (cloze: acc,
  acc_norm; letter: acc) 0- and k-shot, Oren et al.'s contamination p-value per task, and the judged
  (length-controlled) win rate when a judge is configured. Each row carries its 95% interval, chance line, item
  count, prompt digest and items digest (`Score`).
- `data_overlap(training_texts, EvalParams)` -> rows: word n-gram overlap of each task with the training data.
- `report_card(rows, out_dir)` -> report.md, report.csv and the plots.
- Building blocks: `LogLikelihood` (batched continuation scoring with lm-evaluation-harness's conventions),
  `read_items` / `requests` (the tasks and their prompts), `permutation_test`, `Judge` / `win_rates`.
"""
from components.evaluate.params import ContaminationParams, EvalParams, JudgeParams, TaskSpec
from components.evaluate.stats import Score
from components.lazy import lazy_names

# the rest import torch or more: loaded on first use
__getattr__ = lazy_names(__name__, {
    "EvalTextInTraining": "perplexity", "Judge": "judge", "LogLikelihood": "scoring", "annotate": "judge",
    "data_overlap": "run", "evaluate_model": "run", "ngram_overlap": "contamination", "permutation_test":
    "contamination", "read_items": "tasks", "refuse_training_documents": "perplexity", "report_card": "report",
    "requests": "tasks", "win_rates": "judge",
})

__all__ = ["ContaminationParams", "EvalParams", "EvalTextInTraining", "Judge", "JudgeParams", "LogLikelihood",
           "Score", "TaskSpec", "annotate", "data_overlap", "evaluate_model", "ngram_overlap", "permutation_test",
           "read_items", "refuse_training_documents", "report_card", "requests", "win_rates"]
