"""The score rows' gate (suite eval_scores) and the headline numbers a model is known by."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from components.evaluate import Score
from tasks.evaluate import headline
from tasks.gates import GateFailed, validate


def rows() -> list[dict]:
    choice = {"task": "arc_easy", "interval": "wilson", "chance": 0.25, "n": 40, "prompt_digest": "p1",
              "items_digest": "i1"}
    return [Score("base", "bpb", "cc_heldout", 3.41, 3.15, 3.64, "bootstrap", n=10, items_digest="t1").row(),
            Score("base", "acc", value=0.2, ci_low=0.1, ci_high=0.35, formulation="cloze", shots=0, **choice).row(),
            Score("base", "acc_norm", value=0.3, ci_low=0.18, ci_high=0.45, formulation="cloze", shots=0,
                  **choice).row(),
            Score("base", "acc", value=1.0, ci_low=0.91, ci_high=1.0 - 1e-16, formulation="letter", shots=3,
                  **choice).row(),  # a Wilson interval clipped at 1 may end a rounding error short of it
            Score("base", "contamination_p", "arc_easy", 0.79, n=64, items_digest="i2").row()]


def test_scores_pass_and_each_broken_promise_fails_the_gate(tmp_path):
    pd.DataFrame(rows()).to_parquet(tmp_path / "scores.parquet", index=False)
    assert validate("eval_scores", tmp_path, "scores.parquet")["success"]

    broken = pd.DataFrame(rows())
    broken.loc[0, "value"] = math.nan  # no number
    broken.loc[1, "value"] = 0.5  # outside its interval
    broken.loc[2, "items_digest"] = ""  # what was scored is unsaid
    broken.loc[3, "n"] = 0
    broken.loc[3, "prompt_digest"] = ""  # how it was asked is unsaid
    broken = pd.concat([broken, broken.iloc[[4]]])  # the same number twice
    broken.to_parquet(tmp_path / "scores.parquet", index=False)
    with pytest.raises(GateFailed) as failed:
        validate("eval_scores", tmp_path, "scores.parquet")
    columns = {f["column"] for shard in failed.value.result["shards"] for f in shard["failures"]}
    assert columns == {"value_finite", "value_in_interval", "items_digested", "prompt_digested", "n", "score"}


def test_headline_is_cloze_acc_norm_letter_acc_bpb_and_p_values_on_all_items():
    assert headline(pd.DataFrame(rows())) == {"cc_heldout/bpb": 3.41, "arc_easy/cloze/0-shot/acc_norm": 0.3,
                                              "arc_easy/letter/3-shot/acc": 1.0, "arc_easy/contamination_p": 0.79}
