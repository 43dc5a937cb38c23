"""Byte-level BPE learned from a deterministic sample of the mix, saved as a Hugging Face tokenizer folder.

The sample is the documents with the lowest seeded hash of their id (so file order and sharding do not
matter), epoch-0 copies only (an up-sampled domain must not get its words merged more eagerly), without the
held-out documents, cut at `sample_chars`. Shards are read twice, one row group at a time: once for the
lengths, once for the chosen texts, which stream into the trainer.
"""
from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from components.tokenizer.params import TokenizerParams

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]  # ids 0..4
BOS, EOS, PAD, IM_START, IM_END = SPECIAL_TOKENS

# GPT-4 / Llama 3 pre-tokenization: text is cut into pieces first and merges never cross a piece's edge.
# - contractions ('s 't 're 've 'm 'll 'd, any case) are pieces of their own, so "don't" reuses "don";
# - a word keeps one leading non-letter (its space, or a quote): " the" is one token;
# - numbers are cut into groups of 1-3 digits, left to right. Left to frequency, merges would make "1995"
#   one token and "1996" two, so equal quantities get unrelated splits and numbers crowd the vocabulary;
#   with groups, 1,110 tokens spell every number and a model sees digits in consistent places;
# - punctuation runs stay together, with the line breaks after them ("):\n");
# - whitespace runs stay together (the last space goes to the next word): code indented by 8 or 12 spaces
#   costs one token, not 8 or 12, and a blank line ("\n\n") is one token.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message; the generation prompt opens the
# assistant's turn. No BOS: the packer writes <|begin_of_text|> itself, and a template that added it
# too would double it.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# The files that decide how the tokenizer encodes and loads (manifest.json describes them, and is not one).
DIGESTED_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"]


def train_tokenizer(params: TokenizerParams, shards: list[Path], out_dir: Path) -> dict:
    """Learn the merges from the sample, write the tokenizer folder into `out_dir`, return its manifest."""
    take = pick(params, shards, heldout=False, budget=params.sample_chars)
    chars_by_source: Counter[str] = Counter()
    train_bytes = 0

    def texts() -> Iterator[str]:
        nonlocal train_bytes
        for row in documents(shards, take, columns=["source"]):
            chars_by_source[row["source"]] += len(row["text"])
            train_bytes += len(row["text"].encode())
            yield row["text"]

    tokenizer = new_tokenizer()
    tokenizer.train_from_iterator(texts(), trainer=_trainer(params))
    stats = {"train_docs": len(take), "train_chars": sum(take.values()), "train_bytes": train_bytes,
             "train_chars_by_source": dict(sorted(chars_by_source.items()))}
    return save(tokenizer, Path(out_dir), params, stats)


def new_tokenizer() -> Tokenizer:
    # No unknown token: the 256 byte tokens spell any text. No normalizer: the text is kept exactly as it
    # is, so decode(encode(text)) == text.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        # bytes as printable characters; the regex above already split, so ByteLevel's own (GPT-2) must not
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _trainer(params: TokenizerParams) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(
        vocab_size=params.vocab_size, min_frequency=params.min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even those the sample lacks
        show_progress=False)


def heldout_texts(params: TokenizerParams, shards: list[Path], by: str = "source",
                  max_chars: int = 2_000_000) -> dict[str, list[str]]:
    """The held-out documents (up to `max_chars`, lowest hashes first), grouped by column `by`."""
    groups: dict[str, list[str]] = {}
    take = pick(params, shards, heldout=True, budget=max_chars)
    for row in documents(shards, take, columns=[by]):
        groups.setdefault(str(row[by]), []).append(row["text"])
    return dict(sorted(groups.items()))


def pick(params: TokenizerParams, shards: list[Path], heldout: bool, budget: int) -> dict[str, int]:
    """{id: characters to take} of the lowest-hash held-out (or not held-out) documents, `budget` in all."""
    docs = ((hashed, doc_id, chars) for doc_id, chars in _lengths(shards)
            if ((hashed := id_hash(doc_id, params.seed)) < params.heldout_fraction) == heldout)
    return _lowest(docs, budget)


def id_hash(doc_id: str, seed: int) -> float:
    """A number in [0, 1) that only the id and the seed decide."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _lowest(docs: Iterable[tuple[float, str, int]], budget: int) -> dict[str, int]:
    """The lowest-hash documents whose characters reach `budget`, the last one cut to fit. A heap holds
    only the current pick, so memory grows with the sample, not with the corpus."""
    heap: list[tuple[float, str, int]] = []  # (-hash, id, chars): the highest hash on top
    in_heap: set[str] = set()
    total = 0
    for hashed, doc_id, chars in docs:
        if doc_id in in_heap or chars == 0:  # a copy from another shard (anneal repeats pretrain)
            continue
        heapq.heappush(heap, (-hashed, doc_id, chars))
        in_heap.add(doc_id)
        total += chars
        while total - heap[0][2] >= budget:  # the budget is met without the highest hash
            _, dropped, size = heapq.heappop(heap)
            in_heap.discard(dropped)
            total -= size
    take, left = {}, budget
    for _, doc_id, chars in sorted(heap, reverse=True):  # lowest hash first
        take[doc_id] = min(chars, left)
        left -= take[doc_id]
    return take


def _lengths(shards: list[Path]) -> Iterator[tuple[str, int]]:
    for batch in _epoch0_batches(shards, ["id", "text"]):
        yield from zip(batch["id"].to_pylist(), pc.utf8_length(batch["text"]).to_pylist())


def documents(shards: list[Path], take: dict[str, int], columns: list[str]) -> Iterator[dict]:
    """The rows of the documents in `take`, once each, in file order, texts cut to their length there."""
    wanted, seen = pa.array(list(take), pa.string()), set()
    for batch in _epoch0_batches(shards, ["id", "text", *columns]):
        for row in batch.filter(pc.is_in(batch["id"], value_set=wanted)).to_pylist():
            if row["id"] not in seen:
                seen.add(row["id"])
                yield row | {"text": row["text"][:take[row["id"]]]}


def _epoch0_batches(shards: list[Path], columns: list[str]) -> Iterator[pa.RecordBatch]:
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=1024, columns=[*columns, "epoch"]):
            yield batch.filter(pc.equal(batch["epoch"], 0))


def save(tokenizer: Tokenizer, out_dir: Path, params: TokenizerParams, stats: dict) -> dict:
    """Write the folder AutoTokenizer.from_pretrained reads, plus manifest.json; return the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    named = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    _write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", **named,
        "extra_special_tokens": [IM_START, IM_END],  # transformers 5's name for additional_special_tokens
        "model_max_length": params.model_max_length,
        "clean_up_tokenization_spaces": False,  # it drops spaces before punctuation: decoding must be exact
    })
    # Read by transformers 4 and other tools; transformers 5 takes the same from tokenizer_config.json.
    _write_json(out_dir / "special_tokens_map.json",
                {**named, "additional_special_tokens": [IM_START, IM_END]})
    # transformers 5 reads chat_template.jinja beside the config (and writes it there from save_pretrained)
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    manifest = {"digest": tokenizer_digest(out_dir), "vocab_size": tokenizer.get_vocab_size(),
                "special_token_ids": {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS},
                **stats, "params": params.model_dump()}
    _write_json(out_dir / "manifest.json", manifest)
    return manifest


def tokenizer_digest(folder: Path) -> str:
    """sha256 of the files that make the tokenizer: equal digests encode every text the same way."""
    sha = hashlib.sha256()
    for name in DIGESTED_FILES:
        path = Path(folder) / name
        if path.exists():
            data = path.read_bytes()
            sha.update(f"{name}\0{len(data)}\0".encode())  # names and lengths: no two file sets hash alike
            sha.update(data)
    return sha.hexdigest()


def load(folder: Path) -> Tokenizer:
    """The bare `tokenizers.Tokenizer`: fast batch encoding without transformers (the packer uses it).

    Special-token strings inside a document are encoded as text, never as control tokens: a web page that
    mentions "<|end_of_text|>" must not end a document in the middle."""
    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.encode_special_tokens = True
    return tokenizer


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
