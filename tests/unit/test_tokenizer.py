"""The tokenizer stage on real text (Gutenberg, WikiText, C4) laid out as the mix stage writes it."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from components.curated import CuratedSource, read_source
from components.tokenizer.roundtrip import ADVERSARIAL
from components.tokenizer import (
    SPECIAL_TOKENS,
    TokenizerParams,
    heldout_texts,
    load,
    report,
    tokenizer_digest,
    train_tokenizer,
)
from components.tokenizer.train import documents, id_hash, pick

for _var in ("DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[2]
CURATED = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR") or REPO.parent / "shared" / "data").resolve() / "curated"
pytestmark = pytest.mark.skipif(not CURATED.is_dir(), reason=f"test data not found at {CURATED}")

SOURCES = [("alice", "gutenberg/pg11.txt", "gutenberg", "fiction"),
           ("frankenstein", "gutenberg/pg84.txt", "gutenberg", "fiction"),
           ("wikitext", "wikitext-2/valid.txt", "wikitext", "reference"),
           ("c4", "llamafactory-demo/c4_demo.jsonl", "jsonl", None)]
PARAMS = TokenizerParams(vocab_size=1000, sample_chars=1_500_000)


def documents_frame() -> pd.DataFrame:
    rows = []
    for name, path, format, domain in SOURCES:
        source = CuratedSource(name=name, uri=str(CURATED / path), format=format, domain=domain, max_docs=300,
                               split_chars=5000 if format == "gutenberg" else None)
        rows += [{"id": doc.id, "text": doc.text, "source": name, "domain": domain or "web", "quality": None,
                  "url": None, "epoch": 0} for doc in read_source(source)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> list[Path]:
    """One pretrain shard where every tenth document is up-sampled to a second epoch, and an anneal shard."""
    folder = tmp_path_factory.mktemp("mix")
    docs = documents_frame()
    repeats = docs.iloc[::10].assign(epoch=1)
    pd.concat([docs, repeats]).to_parquet(folder / "pretrain-00000.parquet", index=False)
    docs.iloc[::7].to_parquet(folder / "anneal-00000.parquet", index=False)
    return [folder / "pretrain-00000.parquet", folder / "anneal-00000.parquet"]


@pytest.fixture(scope="module")
def trained(mix, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tokenizer")
    return out, train_tokenizer(PARAMS, mix, out)


def test_folder_has_the_files_and_special_tokens_come_first(trained):
    folder, manifest = trained
    assert sorted(p.name for p in folder.iterdir()) == ["chat_template.jinja", "manifest.json",
                                                       "special_tokens_map.json", "tokenizer.json",
                                                       "tokenizer_config.json"]
    tokenizer = load(folder)
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert manifest["special_token_ids"] == {token: n for n, token in enumerate(SPECIAL_TOKENS)}
    assert manifest["vocab_size"] == tokenizer.get_vocab_size() == 1000
    assert manifest["train_chars"] == PARAMS.sample_chars  # the corpus has more: the last document is cut
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert manifest["digest"] == tokenizer_digest(folder)


def test_auto_tokenizer_loads_the_folder_with_the_chatml_template(trained):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained[0])
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == tuple(SPECIAL_TOKENS[:3])
    assert tokenizer.pad_token_id == 2 and tokenizer.model_max_length == PARAMS.model_max_length
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 12+30?"},
                {"role": "assistant", "content": "42."}, {"role": "user", "content": "Why?\nExplain."}]
    expected = ("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhat is 12+30?<|im_end|>\n"
                "<|im_start|>assistant\n42.<|im_end|>\n<|im_start|>user\nWhy?\nExplain.<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    assert tokenizer.apply_chat_template(messages, tokenize=False) == expected.removesuffix("<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert ids.count(3) == 5 and ids.count(4) == 4  # the markers are single special tokens, never spelled out
    assert tokenizer.decode(ids) == expected
    for text in ADVERSARIAL:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_decoding_gives_back_every_document_and_adversarial_text_exactly(trained, mix):
    tokenizer = load(trained[0])
    texts = [row["text"] for row in documents(mix, {doc_id: 10**9 for doc_id in documents_frame()["id"]}, [])]
    assert len(texts) > 400
    for text, encoding in zip(texts + ADVERSARIAL, tokenizer.encode_batch(texts + ADVERSARIAL)):
        assert tokenizer.decode(encoding.ids) == text


def test_numbers_are_split_into_groups_of_at_most_three_digits(trained):
    tokenizer = load(trained[0])
    pieces = [piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str("1234567 3.14159 $1,000,000")]
    assert pieces[:3] == ["123", "456", "7"]
    text = "Population 31415926535 in 2024, 1999-12-31 ٣٤٥٦٧ 0.000001"
    for token in tokenizer.encode(text).tokens:
        if any(char.isdigit() for char in tokenizer.decode([tokenizer.token_to_id(token)])):
            digits = tokenizer.decode([tokenizer.token_to_id(token)])
            assert digits.isdigit() and len(digits) <= 3, digits


def test_whitespace_runs_stay_together_and_the_last_space_joins_the_word(trained):
    split = load(trained[0]).pre_tokenizer.pre_tokenize_str
    pieces = [piece for piece, _ in split("if x:\n        return  y\n\n\n")]
    # ByteLevel shows a space as "Ġ" and a newline as "Ċ"
    assert pieces == ["if", "Ġx", ":Ċ", "ĠĠĠĠĠĠĠ", "Ġreturn", "Ġ", "Ġy", "ĊĊĊ"]


def test_training_is_deterministic_and_ignores_file_order_and_repeats(trained, mix, tmp_path):
    docs = pd.read_parquet(mix[0])
    reordered = [tmp_path / "pretrain-00000.parquet", tmp_path / "pretrain-00001.parquet"]
    shuffled = docs[docs["epoch"] == 0].sample(frac=1, random_state=5)
    shuffled.iloc[:200].to_parquet(reordered[0], index=False)
    pd.concat([shuffled.iloc[200:], shuffled.assign(epoch=3)]).to_parquet(reordered[1], index=False)
    again = train_tokenizer(PARAMS, [*reordered, mix[1]], tmp_path / "again")
    assert again["digest"] == trained[1]["digest"]
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (trained[0] / "tokenizer.json").read_bytes()
    bigger = train_tokenizer(PARAMS.model_copy(update={"vocab_size": 1100}), mix, tmp_path / "bigger")
    assert bigger["vocab_size"] == 1100 and bigger["digest"] != trained[1]["digest"]


def test_sample_is_epoch_zero_without_held_out_documents_in_hash_order(mix):
    corpus = documents_frame().assign(chars=lambda frame: frame["text"].str.len())
    corpus["hash"] = [id_hash(doc_id, PARAMS.seed) for doc_id in corpus["id"]]
    take = pick(PARAMS, mix, heldout=False, budget=PARAMS.sample_chars)
    held = pick(PARAMS, mix, heldout=True, budget=10**9)
    assert sum(take.values()) == PARAMS.sample_chars and len(set(take) & set(held)) == 0
    assert set(held) == set(corpus.loc[corpus["hash"] < PARAMS.heldout_fraction, "id"])
    eligible = corpus[corpus["hash"] >= PARAMS.heldout_fraction].sort_values("hash")
    assert list(take) == list(eligible["id"].iloc[:len(take)])  # the lowest hashes, no gap
    assert list(take.values())[:-1] == list(eligible["chars"].iloc[:len(take) - 1])  # whole, but the last
    other_seed = pick(PARAMS.model_copy(update={"seed": 2}), mix, heldout=False, budget=PARAMS.sample_chars)
    assert set(other_seed) != set(take)


def test_report_gives_compression_per_source_and_coverage(trained, mix):
    texts = heldout_texts(PARAMS, mix, by="source")
    assert set(texts) <= {name for name, *_ in SOURCES} and len(texts) >= 3
    result = report(trained[0], {"source": texts, "domain": heldout_texts(PARAMS, mix, by="domain")})
    rows = {row["group"]: row for row in result["groups"]["source"]}
    assert sum(r["docs"] for r in result["groups"]["domain"]) == result["all"]["docs"]  # same documents
    assert set(rows) == set(texts)
    for row in [*rows.values(), result["all"]]:
        assert 1.5 < row["bytes_per_token"] < 6 and row["chars_per_token"] <= row["bytes_per_token"]
    assert 0.3 < result["vocab_coverage"] <= 1
    assert len(result["longest_merges"]) == 50
    assert all(re.fullmatch(r"\d{1,3}", p) or not any(c.isdigit() for c in p)
               for pieces in result["digit_examples"].values() for p in pieces)
    assert "| wikitext |" in result["markdown"] and "bytes/token" in result["markdown"]
