"""Suite `preference_pairs`: the pairs the reward and dpo stages train on, one row per pair
(components/preferences/build.py SCHEMA). The prompt's shape is checked from its JSON, the replies from their
text, each side's token columns from its ids and mask, and the prompt hash from the prompt itself."""
from __future__ import annotations

from components.preferences.pairs import ORIGINS, prompt_id
from tasks.suites.sft_examples import messages_of  # the same parse of a JSON list of turns

NAME = "preference_pairs"
ROW_ID = "id"
# One file per split, so a prompt hash in two files is a prompt in both train and val
UNIQUE_ACROSS_SHARDS = ("id", "prompt_id")
SIDES = ("chosen", "rejected")
COLUMNS = ["id", "source", "origin", "split", "prompt", "prompt_id", "chosen", "rejected", "chosen_ids",
           "chosen_mask", "rejected_ids", "rejected_mask", "chosen_tokens", "rejected_tokens"]
# an optional system turn, then user and assistant alternating, ending with the user: the replies answer it
PROMPT_ORDER = r"^(?:system,)?user(?:,assistant,user)*$"


def derive(df):
    """The prompt's roles and shortest turn, whether its hash is honest, the replies' facts, and per side the
    facts read back from its ids and mask."""
    prompts = df["prompt"].map(messages_of)
    derived = {
        "roles": prompts.map(lambda turns: ",".join(str(turn.get("role")) for turn in turns)),
        "shortest_prompt_turn": prompts.map(lambda turns: min((len(str(t.get("content") or "").strip())
                                                               for t in turns), default=0)),
        "prompt_id_matches": [bool(turns) and prompt_id(turns) == stored
                              for turns, stored in zip(prompts, df["prompt_id"])],
        "same_replies": df["chosen"].str.strip() == df["rejected"].str.strip(),
    }
    for side in SIDES:
        ids, masks = df[f"{side}_ids"], df[f"{side}_mask"]
        derived |= {
            f"{side}_chars": df[side].str.strip().str.len(),
            f"{side}_ids_length": ids.map(len),
            f"{side}_mask_length": masks.map(len),
            f"{side}_mask_sum": masks.map(lambda mask: int(mask.sum(dtype="int64"))),
            f"{side}_mask_binary": masks.map(lambda mask: set(mask.tolist()) <= {0, 1}),
            f"{side}_ends_trained": masks.map(lambda mask: len(mask) > 0 and mask[-1] == 1),  # the final EOS
        }
    return df.assign(**derived)


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    max_seq_len = params.max_seq_len if params is not None else None
    equal = gxe.ExpectColumnPairValuesToBeEqual
    expected = [
        gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS, exact_match=False),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val"]),
        gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=list(ORIGINS)),
        gxe.ExpectColumnValuesToMatchRegex(column="roles", regex=PROMPT_ORDER),
        gxe.ExpectColumnValuesToBeBetween(column="shortest_prompt_turn", min_value=1),  # no empty turn
        gxe.ExpectColumnValuesToBeInSet(column="prompt_id_matches", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="same_replies", value_set=[False]),  # a pair prefers something
    ]
    for side in SIDES:
        expected += [
            gxe.ExpectColumnValuesToBeBetween(column=f"{side}_chars", min_value=1),  # no empty reply
            # fits the model's context after the chat template; the stored counts are the real ones
            gxe.ExpectColumnValuesToBeBetween(column=f"{side}_tokens", min_value=1, max_value=max_seq_len),
            equal(column_A=f"{side}_tokens", column_B=f"{side}_ids_length"),
            equal(column_A=f"{side}_mask_length", column_B=f"{side}_ids_length"),
            gxe.ExpectColumnValuesToBeInSet(column=f"{side}_mask_binary", value_set=[True]),
            gxe.ExpectColumnValuesToBeBetween(column=f"{side}_mask_sum", min_value=1),  # something to score
            gxe.ExpectColumnValuesToBeInSet(column=f"{side}_ends_trained", value_set=[True]),
        ]
    return expected
