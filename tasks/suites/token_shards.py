"""Suite `token_shards`: the contract between tokenize and training, one row per token shard (the facts are
read back from the shards themselves by components.tokenize.check_contract)."""
from __future__ import annotations

NAME = "token_shards"
ROW_ID = "name"


def expectations(params=None) -> list:
    import great_expectations.expectations as gxe

    equal = gxe.ExpectColumnPairValuesToBeEqual
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="empty", value_set=[False]),
        # every id fits the vocabulary: a model with another vocabulary size must not read these
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="vocab_size", column_B="max_id"),
        equal(column_A="dtype", column_B="expected_dtype"),
        # one end-of-text token per document, and the shard ends with one
        equal(column_A="eot_count", column_B="documents"),
        gxe.ExpectColumnValuesToBeInSet(column="ends_with_eot", value_set=[True]),
        # offsets run from 0 to the token count and every document ends with the EOT
        gxe.ExpectColumnValuesToBeInSet(column="offsets_valid", value_set=[True]),
        equal(column_A="tokens", column_B="manifest_tokens"),
        equal(column_A="documents", column_B="manifest_documents"),
        equal(column_A="tokenizer_digest", column_B="expected_digest"),
        gxe.ExpectColumnValuesToBeInSet(column="md5_matches", value_set=[True]),  # the bytes the manifest names
    ]
