"""Tokenize and pack: the contract holds, documents come back intact, splits are disjoint, bytes are
reproducible, literal special-token text stays text, and each broken rule is named."""
from __future__ import annotations

import importlib
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from components.clean.executor import ExecutorParams
from components.tokenize import (ContractError, TokenizeParams, check_contract, open_shard, pack, read_manifest,
                                 require_compatible, violations)
from components.tokenize.pack import load_tokenizer

pack_module = importlib.import_module("components.tokenize.pack")  # the package's `pack` is the function
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
EOT_ID, DIGEST = 1, "sha256:test-tokenizer"
LITERAL = "A document that mentions <|end_of_text|> in its text, and <|im_start|> too."
PARAMS = TokenizeParams(val_fraction=0.2, shard_tokens=4000, batch_docs=16, executor=ExecutorParams(workers=1))


@pytest.fixture(scope="module")
def alice(data_dir) -> str:
    return (data_dir / "curated" / "gutenberg" / "pg11.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tokenizer_dir(alice, tmp_path_factory):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([alice[:100_000]], trainer)
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def docs(alice) -> pd.DataFrame:
    """~120 documents of 3 paragraphs each, plus one with special-token text, as the mix writes them."""
    paragraphs = [p.strip() for p in alice.split("\n\n") if p.strip()]
    texts = ["\n\n".join(paragraphs[i:i + 3]) for i in range(0, 360, 3)] + [LITERAL]
    return pd.DataFrame({"id": [f"gutenberg/{i}" for i in range(len(texts))], "text": texts,
                         "source": ["gutenberg" if i % 2 else "wikitext" for i in range(len(texts))],
                         "domain": ["fiction" if i % 3 else "reference" for i in range(len(texts))],
                         "quality": None, "url": None, "epoch": 0})


@pytest.fixture(scope="module")
def inputs(docs, tmp_path_factory) -> dict:
    """Two pretraining shards (the first 30 documents repeated as epoch 1 in the second) and an anneal shard."""
    folder = tmp_path_factory.mktemp("mix")
    shards = {"pretrain-00000.parquet": docs.iloc[:70],
              "pretrain-00001.parquet": pd.concat([docs.iloc[70:], docs.iloc[:30].assign(epoch=1)]),
              "anneal-00000.parquet": docs.iloc[::4]}
    for name, frame in shards.items():
        frame.to_parquet(folder / name, index=False)
    return {"pretrain": [folder / "pretrain-00000.parquet", folder / "pretrain-00001.parquet"],
            "anneal": [folder / "anneal-00000.parquet"]}


@pytest.fixture(scope="module")
def packed(tokenizer_dir, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    return out, pack(PARAMS, tokenizer_dir, DIGEST, inputs, out, progress=False)


def decoded(out, split: str, tokenizer_dir) -> list[str]:
    """Every document of a split, in order, decoded via the offsets (random access), checking its one EOT."""
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    texts = []
    for shard in sorted(out.glob(f"{split}-*.bin")):
        tokens, offsets = open_shard(shard)
        for start, end in zip(offsets[:-1], offsets[1:]):
            document = tokens[start:end].tolist()
            assert document[-1] == EOT_ID and EOT_ID not in document[:-1]
            texts.append(tokenizer.decode(document[:-1], skip_special_tokens=False))
    return texts


def test_the_contract_holds_and_the_manifest_adds_up(packed, tokenizer_dir):
    out, manifest = packed
    table = check_contract(out, 500, DIGEST, EOT_ID)
    assert violations(table) == []
    assert set(table["split"]) == {"train", "val", "anneal"} and len(table) > 3  # several shards per split
    assert (table["tokens"] <= PARAMS.shard_tokens).all() and table["dtype"].eq("uint16").all()
    for split, totals in manifest["splits"].items():
        assert totals["tokens"] == table.loc[table["split"] == split, "tokens"].sum()
        assert totals["tokens"] == sum(totals["by_source"].values()) == sum(totals["by_domain"].values())
    assert not list(out.glob(".pieces"))


def test_documents_decode_to_their_text_in_input_order(packed, tokenizer_dir, inputs):
    out, _ = packed
    pretrain = pd.concat([pd.read_parquet(p) for p in inputs["pretrain"]])
    train, val = decoded(out, "train", tokenizer_dir), decoded(out, "val", tokenizer_dir)
    assert sorted(train + val) == sorted(pretrain["text"])  # every copy, nothing else
    held_out = pretrain["text"].isin(val)
    assert train == pretrain.loc[~held_out, "text"].tolist() and val == pretrain.loc[held_out, "text"].tolist()


def test_no_document_is_on_both_sides_of_the_validation_split(packed, tokenizer_dir, docs, inputs):
    out, manifest = packed
    id_of = dict(zip(docs["text"], docs["id"]))
    train, val, anneal = ({id_of[text] for text in decoded(out, split, tokenizer_dir)}
                          for split in ("train", "val", "anneal"))
    assert val and train and not train & val
    assert not anneal & val  # anneal documents held out for validation are dropped from anneal
    expected_anneal = set(pd.read_parquet(inputs["anneal"][0])["id"]) - val
    assert anneal == expected_anneal
    assert manifest["anneal_dropped_val_documents"] == len(pd.read_parquet(inputs["anneal"][0])) - len(anneal)


def test_output_bytes_do_not_depend_on_the_run_or_the_number_of_workers(packed, tokenizer_dir, inputs, tmp_path):
    out, manifest = packed
    for workers, threads in ((1, None), (2, None), (2, 2)):
        again = pack(PARAMS.model_copy(update={"executor": ExecutorParams(workers=workers),
                                               "threads_per_worker": threads}), tokenizer_dir, DIGEST,
                     inputs, tmp_path / f"w{workers}t{threads}", progress=False)
        assert again == manifest, f"{workers} workers x {threads} threads wrote other shards"
        written = (tmp_path / f"w{workers}t{threads}" / "manifest.json").read_bytes()
        assert written == (out / "manifest.json").read_bytes()
    reseeded = pack(PARAMS.model_copy(update={"seed": 2}), tokenizer_dir, DIGEST, inputs, tmp_path / "s2", False)
    assert reseeded["splits"]["val"] != manifest["splits"]["val"]


def test_a_document_longer_than_a_shard_gets_a_shard_of_its_own(tokenizer_dir, inputs, tmp_path):
    manifest = pack(PARAMS.model_copy(update={"shard_tokens": 100}), tokenizer_dir, DIGEST, inputs, tmp_path, False)
    oversized = [shard for shard in manifest["shards"] if shard["tokens"] > 100]
    assert oversized and all(shard["documents"] == 1 for shard in oversized)
    assert violations(check_contract(tmp_path, 500, DIGEST, EOT_ID)) == []
    with pytest.raises(FileExistsError, match="already holds token shards"):
        pack(PARAMS, tokenizer_dir, DIGEST, inputs, tmp_path, progress=False)


def test_special_token_text_in_a_document_is_encoded_as_text(packed, tokenizer_dir):
    raw = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    assert EOT_ID in raw.encode(LITERAL, add_special_tokens=False).ids  # the trap: parsed by default
    ids = load_tokenizer(str(tokenizer_dir / "tokenizer.json")).encode(LITERAL, add_special_tokens=False).ids
    assert not set(ids) & set(range(len(SPECIAL)))
    out, _ = packed
    assert LITERAL in decoded(out, "train", tokenizer_dir) + decoded(out, "val", tokenizer_dir)


def _edit_manifest(out, name, **changes):
    manifest = json.loads((out / "manifest.json").read_text())
    next(s for s in manifest["shards"] if s["name"] == name).update(changes)
    (out / "manifest.json").write_text(json.dumps(manifest))


def id_beyond_vocab(out, name):
    tokens = np.memmap(out / name, dtype=np.uint16, mode="r+")
    tokens[0] = 500
    tokens.flush()
    return "ids below vocab size", "found id 500"


def trailing_eot_removed(out, name):
    tokens = np.fromfile(out / name, dtype=np.uint16)
    tokens[:-1].tofile(out / name)
    return "ends with EOT", "expected the last token to be the EOT id"


def written_as_uint32(out, name):
    np.fromfile(out / name, dtype=np.uint16).astype(np.uint32).tofile(out / name)
    _edit_manifest(out, name, dtype="uint32")
    return "dtype", "expected uint16, found uint32"


def manifest_count_off(out, name):
    tokens = json.loads((out / "manifest.json").read_text())["shards"][0]["tokens"]
    _edit_manifest(out, name, tokens=tokens + 7)
    return "manifest tokens", f"expected {tokens + 7} tokens (manifest), found {tokens} in the shard"


def emptied(out, name):
    (out / name).write_bytes(b"")
    np.save(out / name.replace(".bin", ".idx.npy"), np.zeros(1, dtype=np.int64))
    _edit_manifest(out, name, tokens=0, documents=0)
    return "not empty", "found 0 tokens"


def two_tokens_swapped(out, name):
    tokens = np.memmap(out / name, dtype=np.uint16, mode="r+")
    i = next(i for i in range(len(tokens) - 1)
             if tokens[i] != tokens[i + 1] and EOT_ID not in (tokens[i], tokens[i + 1]))
    tokens[[i, i + 1]] = tokens[[i + 1, i]]  # counts, dtype, ids and EOTs all still fine
    tokens.flush()
    return "md5", "expected the md5 in manifest.json, found other bytes"


@pytest.mark.parametrize("tamper", [id_beyond_vocab, trailing_eot_removed, written_as_uint32, manifest_count_off,
                                    emptied, two_tokens_swapped])
def test_each_broken_rule_is_named_with_shard_expected_and_found(packed, tmp_path, tamper):
    out = tmp_path / "tokens"
    shutil.copytree(packed[0], out)
    rule, detail = tamper(out, "train-00000.bin")
    messages = violations(check_contract(out, 500, DIGEST, EOT_ID))
    named = [m for m in messages if m.startswith(f"train-00000.bin: rule '{rule}'")]
    assert named and detail in named[0], messages
    assert all(m.startswith("train-00000.bin") for m in messages)  # the other shards are still fine


def test_a_shard_from_another_tokenizer_is_refused(packed):
    messages = violations(check_contract(packed[0], 500, "sha256:another", EOT_ID))
    shards = json.loads((packed[0] / "manifest.json").read_text())["shards"]
    assert messages == [f"{s['name']}: rule 'tokenizer digest': expected sha256:another, found {DIGEST}"
                        for s in shards]


def test_a_model_with_another_vocabulary_or_tokenizer_refuses_the_shards(packed):
    vocab = read_manifest(packed[0])["vocab_size"]
    assert require_compatible(packed[0], vocab, DIGEST)["tokenizer_digest"] == DIGEST
    with pytest.raises(ContractError, match=rf"made with a {vocab}-token vocabulary, the model has 32000"):
        require_compatible(packed[0], 32000, DIGEST)
    with pytest.raises(ContractError, match="rule 'tokenizer digest': expected sha256:another"):
        require_compatible(packed[0], vocab, "sha256:another")


def test_a_stray_shard_and_no_shards_are_violations(packed, tmp_path):
    out = tmp_path / "tokens"
    shutil.copytree(packed[0], out)
    shutil.copy(out / "train-00000.bin", out / "train-99999.bin")
    assert any(m.startswith("train-99999.bin: rule 'listed in manifest'")
               for m in violations(check_contract(out, 500, DIGEST, EOT_ID)))
    assert violations(check_contract(out, 500, DIGEST, EOT_ID).iloc[:0]) == [
        "no shards: expected at least one token shard, found none"]


def test_workers_share_the_cores_with_the_tokenizers_thread_pool(monkeypatch):
    """Each worker process's Rust pool gets cores // workers threads (at least 1), unless set; the caller's own
    process (one worker) keeps its pool on every core."""
    monkeypatch.setattr(pack_module, "usable_cores", lambda: 16)
    assert [pack_module.threads_per_worker(None, w) for w in (1, 2, 4, 16, 32)] == [16, 8, 4, 1, 1]
    assert pack_module.threads_per_worker(3, 4) == 3
    for variable in ("RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(variable, raising=False)
    settings = pack_module.Settings("t.json", 1, "uint16", 1, 0.1, 16, ".", pack_module.this_process(), None, 4)
    pack_module.size_thread_pool(settings)
    assert "RAYON_NUM_THREADS" not in os.environ  # in the caller: left alone
    pack_module.size_thread_pool(settings._replace(caller="elsewhere:1"))
    assert (os.environ["RAYON_NUM_THREADS"], os.environ["TOKENIZERS_PARALLELISM"]) == ("4", "true")
    pack_module.size_thread_pool(settings._replace(caller="elsewhere:1", workers=16))
    assert (os.environ["RAYON_NUM_THREADS"], os.environ["TOKENIZERS_PARALLELISM"]) == ("1", "false")
