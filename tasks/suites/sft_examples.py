"""Suite `sft_examples`: the chat-templated conversations the sft stage trains on, one row per conversation
(components/sft_data/build.py SCHEMA). The conversation's shape is checked from its `messages`, the token
columns from the ids and the mask themselves."""
from __future__ import annotations

import json

NAME = "sft_examples"
ROW_ID = "id"
UNIQUE_ACROSS_SHARDS = ("id",)  # no conversation in both train and val
COLUMNS = ["id", "source", "split", "messages", "n_turns", "input_ids", "assistant_mask", "n_tokens",
           "n_assistant_tokens"]
# an optional system turn, then user and assistant alternating, ending with the assistant
TURN_ORDER = r"^(?:system,)?user,assistant(?:,user,assistant)*$"


def derive(df):
    """roles ("system,user,assistant"), the shortest content, and the facts read back from ids and mask."""
    messages = df["messages"].map(messages_of)
    masks = df["assistant_mask"]
    return df.assign(
        roles=messages.map(lambda turns: ",".join(str(turn.get("role")) for turn in turns)),
        turns=messages.map(len),
        last_role=messages.map(lambda turns: turns[-1].get("role") if turns else None),
        shortest_content=messages.map(lambda turns: min((len(str(t.get("content") or "").strip()) for t in turns),
                                                        default=0)),
        ids_length=df["input_ids"].map(len),
        mask_length=masks.map(len),
        mask_sum=masks.map(lambda mask: int(mask.sum(dtype="int64"))),
        mask_binary=masks.map(lambda mask: set(mask.tolist()) <= {0, 1}),
        ends_trained=masks.map(lambda mask: len(mask) > 0 and mask[-1] == 1),  # the final EOS is trained
    )


def messages_of(text: str) -> list[dict]:
    """The turns, or [] when `messages` is not a JSON list of objects (then `roles` is empty and fails)."""
    try:
        turns = json.loads(text)
    except (TypeError, ValueError):
        return []
    return turns if isinstance(turns, list) and all(isinstance(t, dict) for t in turns) else []


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    max_seq_len = params.max_seq_len if params is not None else None
    equal = gxe.ExpectColumnPairValuesToBeEqual
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS, exact_match=False),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val"]),
        gxe.ExpectColumnValuesToMatchRegex(column="roles", regex=TURN_ORDER),
        gxe.ExpectColumnValuesToBeInSet(column="last_role", value_set=["assistant"]),
        equal(column_A="n_turns", column_B="turns"),
        gxe.ExpectColumnValuesToBeBetween(column="shortest_content", min_value=1),  # no empty turn
        # fits the model's context after the chat template; the stored counts are the real ones
        gxe.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1, max_value=max_seq_len),
        equal(column_A="n_tokens", column_B="ids_length"),
        equal(column_A="mask_length", column_B="ids_length"),
        gxe.ExpectColumnValuesToBeInSet(column="mask_binary", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="n_assistant_tokens", min_value=1),  # something to train
        equal(column_A="n_assistant_tokens", column_B="mask_sum"),
        gxe.ExpectColumnValuesToBeInSet(column="ends_trained", value_set=[True]),
    ]
