"""Throughput of the tokenize stage's pack() against raw `tokenizers` batch encoding of the same texts.

    DO_NOT_TRACK=1 .venv/bin/python benchmarks/tokenize_throughput.py [--mb 30] [--settings 1 2 2x2] [--rounds 3]
        [--tokenizer DIR]

Input: mix-like Parquet shards (columns id, text, source, domain, quality, url, epoch; 1,000 documents each)
built from the curated texts in $LLM_LIFECYCLE_DATA_DIR/curated (default ../shared/data): the Gutenberg
novels and Tiny Shakespeare in ~4,000-character chunks, WikiText-2 articles and the C4 demo documents,
repeated (as further epochs) until the text reaches --mb megabytes. 95% of them are pretraining shards and
5% anneal shards. Tokenizer: --tokenizer (a folder with tokenizer.json), else a byte-level BPE of 16,384 ids
trained here on the first 4 MB of those texts.

Both sides encode every pretraining and anneal document once (pack drops anneal documents held out for
validation: ~2% of 5%) with special-token text encoded as text, in batches of 256 (TokenizeParams().batch_docs):
- raw:  Tokenizer.encode_batch_fast / encode_batch over texts already in memory (Parquet read not timed),
        the Rust side's own thread pool on every core, results counted and dropped;
- pack: components.tokenize.pack() from Parquet shards to merged, hashed .bin shards and manifest, wall clock,
        on the local executor with each --settings value W or WxT: W workers (1: in this process, the Rust thread
        pool on every core), T tokenizer threads in each (default: cores // W, TokenizeParams.threads_per_worker).
Each measurement runs in a fresh (spawned) interpreter, raw and every setting alternately, --rounds times; the
table gives the best round and, per setting, the median and range of its ratio to raw encode_batch_fast in the
same round (the machine's load moves between rounds).
Token rates count document tokens (EOTs excluded). Wall-clock rates depend on what else the machine runs;
tokens per CPU-second (this process's threads and its worker processes) somewhat less.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from components.clean.executor import ExecutorParams
from components.curated.readers import read_gutenberg, read_jsonl, read_text, read_wikitext
from components.tokenize import TokenizeParams, pack
from components.tokenize.pack import load_tokenizer, threads_per_worker, usable_cores

DATA = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
SHARD_DOCS = 1000  # a real mix has many shards (10,000 documents each): enough here to keep workers busy


def curated_documents() -> list[tuple[str, str, str]]:
    """(source, domain, text) of every curated document, once."""
    curated = DATA / "curated"
    docs = []
    for book in sorted((curated / "gutenberg").glob("*.txt")):
        with open(book, encoding="utf-8-sig") as file:
            docs += [("gutenberg", "fiction", text) for text in read_gutenberg(file, split_chars=4000)]
    with open(curated / "tinyshakespeare" / "input.txt", encoding="utf-8") as file:
        docs += [("tinyshakespeare", "fiction", text) for text in read_text(file, split_chars=4000)]
    with open(curated / "wikitext-2" / "valid.txt", encoding="utf-8") as file:
        docs += [("wikitext", "reference", text) for text in read_wikitext(file)]
    with open(curated / "llamafactory-demo" / "c4_demo.jsonl", encoding="utf-8") as file:
        docs += [("c4", "web", text) for text in read_jsonl(file)]
    return docs


def write_mix(docs: list[tuple[str, str, str]], megabytes: float, folder: Path) -> dict[str, list[Path]]:
    """Epochs of the documents until `megabytes` of text, as pretrain/anneal shards of SHARD_DOCS rows."""
    rows, size, epoch = [], 0, 0
    while size < megabytes * 1e6:
        for n, (source, domain, text) in enumerate(docs):
            rows.append({"id": f"{source}/{n}", "text": text, "source": source, "domain": domain,
                         "quality": None, "url": None, "epoch": epoch})
            size += len(text.encode())
        epoch += 1
    frame = pd.DataFrame(rows)
    anneal = frame.index % 20 == 0  # every 20th row: 5% anneal
    return {"pretrain": _shards(frame[~anneal], folder, "pretrain"), "anneal": _shards(frame[anneal], folder, "anneal")}


def _shards(frame: pd.DataFrame, folder: Path, prefix: str) -> list[Path]:
    paths = []
    for i, start in enumerate(range(0, len(frame), SHARD_DOCS)):
        paths.append(folder / f"{prefix}-{i:05d}.parquet")
        frame.iloc[start:start + SHARD_DOCS].to_parquet(paths[-1], compression="zstd", index=False)
    return paths


def train_tokenizer(docs: list[tuple[str, str, str]], folder: Path) -> Path:
    sample, size = [], 0
    for _, _, text in docs:
        if size > 4e6:
            break
        sample.append(text)
        size += len(text)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(sample, trainers.BpeTrainer(
        vocab_size=16384, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def read_texts(inputs: dict) -> list[str]:
    return [text for kind in ("pretrain", "anneal") for path in inputs[kind]
            for text in pq.read_table(path, columns=["text"])["text"].to_pylist()]


def fresh(fn, *args):
    """Run one measurement in a new interpreter: a process whose Rust thread pool has run cannot fork
    workers that use theirs (tokenizers turns their parallelism off), so each side starts as pack would."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def cpu_seconds() -> float:
    """User + system time of this process (all its threads) and of its finished child processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def raw(tokenizer_dir: Path, inputs: dict, fast: bool) -> tuple[float, float, int, int]:
    texts = read_texts(inputs)
    tokenizer = load_tokenizer(str(tokenizer_dir / "tokenizer.json"))  # special-token text as text, like pack
    encode = tokenizer.encode_batch_fast if fast else tokenizer.encode_batch
    batch = TokenizeParams().batch_docs
    start, cpu, tokens = time.perf_counter(), cpu_seconds(), 0
    for i in range(0, len(texts), batch):
        tokens += sum(len(encoding) for encoding in encode(texts[i:i + batch], add_special_tokens=False))
    return time.perf_counter() - start, cpu_seconds() - cpu, tokens, len(texts)


def packed(tokenizer_dir: Path, inputs: dict, setting: str, out: Path) -> tuple[float, float, int, int]:
    shutil.rmtree(out, ignore_errors=True)
    workers, _, threads = setting.partition("x")
    params = TokenizeParams(executor=ExecutorParams(workers=int(workers)), threads_per_worker=int(threads) if threads
                            else None)
    start, cpu = time.perf_counter(), cpu_seconds()
    manifest = pack(params, tokenizer_dir, "benchmark", inputs, out, progress=False)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    documents = sum(split["documents"] for split in manifest["splits"].values())
    return seconds, cpu, sum(split["tokens"] for split in manifest["splits"].values()) - documents, documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=30)
    parser.add_argument("--settings", nargs="+", default=["1", "2", "2x2"],
                        help="W (workers, threads = cores // W) or WxT (T tokenizer threads per worker)")
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tokenize-bench-"))
    try:
        docs = curated_documents()
        inputs = write_mix(docs, args.mb, work)
        tokenizer_dir = args.tokenizer or train_tokenizer(docs, work)
        texts = read_texts(inputs)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        print(f"input: {len(texts)} documents, {mb:.1f} MB of text, {sum(map(len, inputs.values()))} shards; "
              f"vocab {Tokenizer.from_file(str(tokenizer_dir / 'tokenizer.json')).get_vocab_size()}; "
              f"{usable_cores()} usable cores, load average {os.getloadavg()[0]:.1f} before")
        report(tokenizer_dir, inputs, args.settings, args.rounds, work / "out")
        print(f"load average {os.getloadavg()[0]:.1f} after")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def setting_name(setting: str) -> str:
    workers, _, threads = setting.partition("x")
    return f"pack {workers}w x {threads or threads_per_worker(None, int(workers))}t"


def report(tokenizer_dir: Path, inputs: dict, settings: list[str], rounds: int, out: Path) -> None:
    runs = {"raw encode_batch_fast": [], "raw encode_batch": [], **{setting_name(s): [] for s in settings}}
    for _ in range(rounds):  # alternate, so a burst of load from elsewhere does not favour one side
        runs["raw encode_batch_fast"].append(fresh(raw, tokenizer_dir, inputs, True))
        runs["raw encode_batch"].append(fresh(raw, tokenizer_dir, inputs, False))
        for setting in settings:
            runs[setting_name(setting)].append(fresh(packed, tokenizer_dir, inputs, setting, out))
    rate = {name: max(tokens / seconds for seconds, _, tokens, _ in results) for name, results in runs.items()}
    per_cpu = {name: max(tokens / cpu for _, cpu, tokens, _ in results) for name, results in runs.items()}
    baseline = "raw encode_batch_fast"
    print(f"{'':24}{'wall s':>8}{'CPU s':>8}{'tokens':>10}{'docs':>7}{'Mtok/s':>8}{'docs/s':>8}{'ratio':>7}"
          f"{'Mtok/CPU-s':>12}{'ratio':>7}   per-round wall ratio: median (range)")
    for name, results in runs.items():
        seconds, cpu, tokens, docs = min(results)
        paired = sorted(base[0] / own[0] for own, base in zip(results, runs[baseline]))
        print(f"{name:24}{seconds:8.2f}{cpu:8.2f}{tokens:10d}{docs:7d}{rate[name] / 1e6:8.2f}{docs / seconds:8.0f}"
              f"{rate[name] / rate[baseline]:6.2f}x{per_cpu[name] / 1e6:12.2f}"
              f"{per_cpu[name] / per_cpu[baseline]:6.2f}x   {paired[len(paired) // 2]:.2f}x "
              f"({paired[0]:.2f}-{paired[-1]:.2f})")
    print(f"best of {rounds} runs each; ratio: against raw encode_batch_fast "
          "(wall: tokens/s; CPU: tokens per CPU-second); per-round: against the raw run just before it")


if __name__ == "__main__":
    main()
