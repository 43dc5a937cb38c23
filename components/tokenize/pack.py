"""Tokenizing mix shards and packing the token ids into flat, numbered shards.

Two steps:
  1. tokenize  one task per input Parquet shard (on the project's executor): stream it in record batches,
               encode each batch with the tokenizer's Rust `encode_batch_fast`, and append the ids, with an
               EOT after every document, to one piece file per split (`.pieces/<input>-<split>.bin`)
  2. merge     concatenate each split's pieces, in input order, into `<split>-00000.bin`, … of at most
               `shard_tokens` tokens, cut at document boundaries
Every piece depends only on its input shard, the tokenizer and the seed, and the merge keeps input order, so
the output bytes do not depend on the number of workers or on which finishes first.
"""
from __future__ import annotations

import hashlib
import os
import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer

EOT = "<|end_of_text|>"
SPLITS = ("train", "val", "anneal")
INPUT_KINDS = ("pretrain", "anneal")
COLUMNS = ["id", "text", "source", "domain"]


class Job(NamedTuple):
    index: int  # position in the input order: names the pieces, and orders the merge
    kind: str  # "pretrain" or "anneal"
    path: str


class Settings(NamedTuple):
    tokenizer_file: str
    eot_id: int
    dtype: str
    seed: int
    val_fraction: float
    batch_docs: int
    pieces_dir: str
    caller: str  # this_process() of pack's caller
    threads: int | None  # the tokenizer's threads in each worker process; None: cores // workers
    workers: int


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"  # Dask workers may run on other hosts


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer that holds every id: half the bytes of uint32 for vocabularies up to 65536."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def index_path(shard: Path) -> Path:
    """`train-00000.bin` → `train-00000.idx.npy`, its document start offsets plus the end."""
    return shard.with_suffix(".idx.npy")


@lru_cache(maxsize=2)  # once per worker process, not once per input shard
def load_tokenizer(tokenizer_file: str) -> Tokenizer:
    tokenizer = Tokenizer.from_file(tokenizer_file)
    # tokenizers matches special tokens written in the input text by default; a document containing the
    # text "<|end_of_text|>" would then end itself early. Document text is data: encode it as plain bytes.
    tokenizer.encode_special_tokens = True
    return tokenizer


def in_val(doc_id: str, seed: int, val_fraction: float) -> bool:
    """A seeded hash of the id, so every copy (epoch) of a document, in any shard, lands on the same side.
    Salted with "val" so the split is independent of the mix stage's id-hash selection."""
    digest = hashlib.blake2b(f"{seed}:val:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < val_fraction * 2**64


def split_of(kind: str, doc_id: str, settings: Settings) -> str | None:
    """None: dropped. Anneal documents are also in pretrain; one whose id is held out for validation is
    dropped from anneal too, so that validation never scores text the model trained on."""
    held_out = in_val(doc_id, settings.seed, settings.val_fraction)
    if kind == "pretrain":
        return "val" if held_out else "train"
    return None if held_out else "anneal"


def usable_cores() -> int:
    """The cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_worker(threads: int | None, workers: int) -> int:
    """The tokenizer's thread pool and the worker processes share the cores: each worker gets its share."""
    return threads or max(1, usable_cores() // workers)


def size_thread_pool(settings: Settings) -> None:
    """In an executor's worker, size the tokenizers library's Rust thread pool before its first use (it is
    built once per process, from RAYON_NUM_THREADS): workers x every core would put several threads on each
    core, and they fight over them. The caller's own process (one worker) keeps its pool on every core."""
    if this_process() == settings.caller:
        return
    threads = threads_per_worker(settings.threads, settings.workers)
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"


def tokenize_shard(job: Job, settings: Settings) -> dict:
    """Step 1 for one input shard: returns its pieces (one per split it feeds) and how many documents it dropped."""
    size_thread_pool(settings)
    tokenizer = load_tokenizer(settings.tokenizer_file)
    writers: dict[str, PieceWriter] = {}
    dropped = 0
    for docs, splits, kept, encodings in encoded_batches(tokenizer, job, settings):
        dropped += len(splits) - len(kept)
        for k, encoding in zip(kept, encodings):
            if splits[k] not in writers:
                piece = Path(settings.pieces_dir) / f"{job.index:05d}-{splits[k]}.bin"
                writers[splits[k]] = PieceWriter(piece, settings)
            writers[splits[k]].add(encoding.ids, docs["source"][k], docs["domain"][k])
        for writer in writers.values():
            writer.flush()
    pieces = [writers[split].close() | {"split": split} for split in SPLITS if split in writers]
    return {"pieces": pieces, "dropped_val_documents": dropped}


def encoded_batches(tokenizer: Tokenizer, job: Job, settings: Settings) -> Iterator[tuple]:
    """(docs, their splits, the kept positions, the kept documents' encodings) per record batch, in order.

    The next batch is read and encoded on a helper thread while the caller writes this one: encode_batch_fast
    releases the GIL, so the Rust pool keeps the cores busy while Python turns ids into the piece files (one
    process alone spent 14% of its time there, the encoder idle: benchmarks/RESULTS.md)."""
    def encode(batch) -> tuple:
        docs = batch.to_pydict()
        splits = [split_of(job.kind, doc_id, settings) for doc_id in docs["id"]]
        kept = [k for k, split in enumerate(splits) if split is not None]
        return docs, splits, kept, tokenizer.encode_batch_fast([docs["text"][k] for k in kept],
                                                               add_special_tokens=False)

    batches = pq.ParquetFile(job.path).iter_batches(batch_size=settings.batch_docs, columns=COLUMNS)

    def encode_next() -> tuple | None:
        batch = next(batches, None)
        return None if batch is None else encode(batch)

    with ThreadPoolExecutor(max_workers=1) as helper:
        ahead = helper.submit(encode_next)
        while (current := ahead.result()) is not None:
            ahead = helper.submit(encode_next)
            yield current


class PieceWriter:
    """Appends documents (ids + EOT) to one piece file, a record batch at a time, and counts tokens."""

    def __init__(self, path: Path, settings: Settings):
        self.path, self.dtype, self.eot = path, np.dtype(settings.dtype), [settings.eot_id]
        self.file = open(path, "wb")
        self.batch: list[list[int]] = []
        self.batch_tokens = 0
        self.lengths: list[int] = []
        self.by_source: Counter = Counter()
        self.by_domain: Counter = Counter()

    def add(self, ids: list[int], source: str, domain: str) -> None:
        length = len(ids) + 1  # + the EOT
        self.batch.append(ids)
        self.batch_tokens += length
        self.lengths.append(length)
        self.by_source[str(source)] += length
        self.by_domain[str(domain)] += length

    def flush(self) -> None:
        with_eot = chain.from_iterable(chain.from_iterable((ids, self.eot) for ids in self.batch))
        np.fromiter(with_eot, dtype=self.dtype, count=self.batch_tokens).tofile(self.file)
        self.batch, self.batch_tokens = [], 0

    def close(self) -> dict:
        self.file.close()
        offsets = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])
        np.save(index_path(self.path), offsets)
        return {"bin": str(self.path), "tokens": int(offsets[-1]), "documents": len(self.lengths),
                "by_source": dict(self.by_source), "by_domain": dict(self.by_domain)}


def merge_pieces(pieces: list[dict], out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int) -> list[dict]:
    """Step 2 for one split: the pieces, in input order, as shards of at most `shard_tokens` tokens."""
    sink = ShardSink(out_dir, split, dtype)
    for piece in pieces:
        offsets = np.load(index_path(Path(piece["bin"])))
        tokens = np.memmap(piece["bin"], dtype=dtype, mode="r", shape=(int(offsets[-1]),))
        start = 0
        while start < len(offsets) - 1:
            room = shard_tokens - sink.tokens
            end = int(np.searchsorted(offsets, offsets[start] + room, side="right")) - 1  # whole documents that fit
            if end <= start and sink.tokens:  # the next document does not fit (room may be < 0 after a long one)
                sink.finish()
                continue
            end = max(end, start + 1)  # a document longer than a whole shard: a shard of its own
            sink.write(tokens[offsets[start]:offsets[end]], offsets[start:end + 1] - offsets[start])
            start = end
        del tokens  # close the map before the piece is removed
    sink.finish()
    return sink.shards


class ShardSink:
    """Writes `<split>-NNNNN.bin` and its `.idx.npy`, hashing the bytes as they are written."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype):
        self.out_dir, self.split, self.dtype = out_dir, split, dtype
        self.shards: list[dict] = []
        self.file = None  # opened by the first write, so a split without documents leaves no empty shard
        self.tokens = 0

    def write(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        if self.file is None:
            self.path = self.out_dir / f"{self.split}-{len(self.shards):05d}.bin"
            self.file, self.md5, self.offsets = open(self.path, "wb"), hashlib.md5(), [np.zeros(1, dtype=np.int64)]
        data = np.ascontiguousarray(tokens).tobytes()
        self.file.write(data)
        self.md5.update(data)
        self.offsets.append(offsets[1:].astype(np.int64) + self.tokens)
        self.tokens += len(tokens)

    def finish(self) -> None:
        if self.file is None:
            return
        self.file.close()
        offsets = np.concatenate(self.offsets)
        np.save(index_path(self.path), offsets)
        self.shards.append({"name": self.path.name, "split": self.split, "dtype": self.dtype.name,
                            "tokens": self.tokens, "documents": len(offsets) - 1, "md5": self.md5.hexdigest()})
        self.file, self.tokens = None, 0
