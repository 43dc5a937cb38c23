"""Suite `eval_scores`: the score rows of one model's evaluation (an `evaluate` stage) or of every model's (the
`report` stage), one row per number of the report card (components/evaluate/stats.py `Score`): each is a finite
number over at least one item, inside its 95% interval when it has one, and says what was scored (the items'
digest) and how it was asked (the prompt's digest; documents scored as they are, for bits per byte, perplexity
and the contamination test, have no prompt)."""
from __future__ import annotations

import numpy as np

NAME = "eval_scores"
ROW_ID = "score"
COLUMNS = ["model", "measure", "task", "value", "ci_low", "ci_high", "interval", "chance", "n", "formulation", "shots",
           "subset", "prompt_digest", "items_digest", "note"]
UNPROMPTED = ["bpb", "perplexity", "contamination_p", "ngram_overlap", "arena_elo"]  # arena: people's own prompts
SLACK = 1e-9  # an interval clipped to [0, 1] may end a rounding error short of a score of exactly 0 or 1


def derive(df):
    """`score` names the row; the facts the expectations check, computed from the row's own columns."""
    value, low, high = (df[c].astype(float) for c in ("value", "ci_low", "ci_high"))
    no_interval = low.isna() & high.isna()
    shots = df["shots"].map(lambda k: "" if k is None or k != k else f"{int(k)}-shot")
    return df.assign(
        score=df["model"] + " " + df["measure"] + " " + df["task"] + " " + df["formulation"] + " " + shots + " "
              + df["subset"],
        value_finite=np.isfinite(value),
        value_in_interval=no_interval | ((low <= value + SLACK) & (value - SLACK <= high)),
        items_digested=df["items_digest"].fillna("").str.len() > 0,
        prompt_digested=(df["prompt_digest"].fillna("").str.len() > 0) | df["measure"].isin(UNPROMPTED),
    )


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS, exact_match=False),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="score"),  # one number per model, measure, task and prompt
        gxe.ExpectColumnValuesToBeInSet(column="value_finite", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="value_in_interval", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="items_digested", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="prompt_digested", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="n", min_value=1),
    ]
