"""The round-trip contract: decode(encode(text)) == text for real documents and for text built to break
tokenizers. The tokenizer stage writes the result as a table that its gate checks."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow.parquet as pq
from tokenizers import Tokenizer

ADVERSARIAL = [
    "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 skin tone",  # ZWJ sequences, variation selectors, modifiers
    "東京都は日本の首都です。北京是中国的首都。",
    "مرحبا بالعالم، هذه جملة عربية.",
    "e\u0301 n\u0303 a\u0308\u0304 Z\u0351\u0362\u0327",  # combining marks, stacked
    "nul\x00 esc\x1b[31mred\x1b[0m zero\u200bwidth bom\ufeff del\x7f",
    " " * 300 + "x\t\t\ty" + "\t" * 50 + " \t \n",
    "q" * 10_000,
    "dos\r\nlines\r\n\r\nmac\rold\n\nunix\n",
    "don't WE'LL they're i'M",
    "a document that mentions <|end_of_text|> and <|im_start|> as text",
    "", " ", "\n",
]


def roundtrip_table(tokenizer: Tokenizer, texts: dict[str, str]) -> pd.DataFrame:
    """One row per named text: characters, tokens, and whether decoding gives the text back exactly."""
    names, values = list(texts), list(texts.values())
    encodings = tokenizer.encode_batch(values, add_special_tokens=False)
    return pd.DataFrame({
        "name": names,
        "chars": [len(v) for v in values],
        "tokens": [len(e.ids) for e in encodings],
        "exact": [tokenizer.decode(e.ids, skip_special_tokens=False) == v for e, v in zip(encodings, values)],
    })


def mix_texts(shards: list[Path], limit: int | None) -> Iterator[tuple[str, str]]:
    """(id, text) of the mix's documents, each once (epoch 0), in shard order, at most `limit` of them."""
    count = 0
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(columns=["id", "text", "epoch"]):
            for doc_id, text, epoch in zip(*(batch.column(c).to_pylist() for c in ("id", "text", "epoch"))):
                if epoch == 0:
                    if limit is not None and count >= limit:
                        return
                    count += 1
                    yield doc_id, text
