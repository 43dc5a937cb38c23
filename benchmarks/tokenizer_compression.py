"""Our byte-level BPE against SentencePiece BPE (byte_fallback) on held-out bytes/token, and our training
time against the sample size.

    pip install sentencepiece==0.2.3   # the benchmark's only extra; not a project dependency
    .venv/bin/python benchmarks/tokenizer_compression.py [--vocab-size 4096] [--sample-chars 5000000]

Both tokenizers learn from the same sample: train_tokenizer's (lowest id hashes, held-out documents out) of
a mix-like shard built from the curated books, Shakespeare, Wikipedia articles, presidential speeches and
CCNet web documents in $LLM_LIFECYCLE_DATA_DIR/curated (default ../shared/data). Neither has seen the test
text: WikiText-2 validation (as the curated reader detokenizes it) and the 300 C4 demo documents.
SentencePiece keeps the text as is (identity normalization, whitespace kept) so that both round-trip
exactly; it reads lines (it skips any longer than its max_sentence_length), ours reads whole documents.
Both vocabularies count their special and byte tokens; SentencePiece also spends entries on the characters
it covers (character_coverage 0.9995), which a byte-level vocabulary must learn as merges.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sentencepiece as spm

from components.curated import CuratedSource, read_source
from components.tokenizer import TokenizerParams, load, train_tokenizer
from components.tokenizer.train import documents, pick

DATA = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
CURATED = DATA / "curated"
TRAIN_SOURCES = [  # name, files, format, split_chars
    ("gutenberg", "gutenberg/*.txt", "gutenberg", 5000),
    ("shakespeare", "tinyshakespeare/input.txt", "text", 5000),
    ("wikipedia", "llamafactory-demo/wiki_demo.txt", "lines", None),
    ("speeches", "nltk/*.zip", "zip_txt", None),
    ("web", "web-docs/dolma-tests/*.jsonl.gz", "jsonl", None),
]
TEST_SETS = {"WikiText-2 valid": ("wikitext-2/valid.txt", "wikitext"),
             "C4 web (demo)": ("llamafactory-demo/c4_demo.jsonl", "jsonl")}


def read(name: str, path: str, format: str, split_chars: int | None = None) -> list[str]:
    source = CuratedSource(name=name, uri=str(CURATED / path), format=format, domain=None, split_chars=split_chars)
    return [doc.text for doc in read_source(source)]


def write_mix(folder: Path) -> list[Path]:
    rows = [{"id": f"{name}/{n}", "text": text, "source": name, "domain": None, "quality": None, "url": None,
             "epoch": 0}
            for name, path, format, split in TRAIN_SOURCES
            for n, text in enumerate(read(name, path, format, split))]
    pd.DataFrame(rows).to_parquet(folder / "pretrain-00000.parquet", index=False)
    return [folder / "pretrain-00000.parquet"]


def train_sentencepiece(params: TokenizerParams, shards: list[Path], prefix: Path) -> spm.SentencePieceProcessor:
    take = pick(params, shards, heldout=False, budget=params.sample_chars)
    lines = (line for row in documents(shards, take, []) for line in row["text"].split("\n") if line)
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines, model_prefix=str(prefix), model_type="bpe", vocab_size=params.vocab_size,
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        character_coverage=0.9995, num_threads=2, minloglevel=2)
    return spm.SentencePieceProcessor(model_file=f"{prefix}.model")


def compression(encode, decode, texts: list[str]) -> tuple[float, bool]:
    """bytes/token over all texts, and whether every text decodes back exactly."""
    token_ids = [encode(text) for text in texts]
    size = sum(len(text.encode()) for text in texts)
    exact = all(decode(ids) == text for ids, text in zip(token_ids, texts))
    return size / sum(len(ids) for ids in token_ids), exact


def compare(params: TokenizerParams, shards: list[Path], work: Path) -> list[str]:
    ours = load(_train_ours(params, shards, work / "ours")[0])
    sentencepiece = train_sentencepiece(params, shards, work / "sp")
    lines = [f"## Held-out bytes/token, vocabulary {params.vocab_size}, sample {params.sample_chars:,} chars", "",
             "| test set | docs | MB | ours | SentencePiece BPE | ours / SP | exact round trip (ours, SP) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, (path, format) in TEST_SETS.items():
        texts = read("test", path, format)
        mine, mine_exact = compression(lambda t: ours.encode(t).ids, ours.decode, texts)
        theirs, theirs_exact = compression(sentencepiece.encode, sentencepiece.decode, texts)
        megabytes = sum(len(text.encode()) for text in texts) / 1e6
        lines.append(f"| {name} | {len(texts)} | {megabytes:.2f} | {mine:.3f} | {theirs:.3f} "
                     f"| {mine / theirs:.3f} | {_yes(mine_exact)}, {_yes(theirs_exact)} |")
    return lines


def scaling(params: TokenizerParams, shards: list[Path], work: Path, sizes: list[float]) -> list[str]:
    # the fastest of 3 runs: the cores are shared, and other work only ever adds time
    seconds = [min(_train_ours(params.model_copy(update={"sample_chars": int(mb * 1e6)}), shards, work / "s")[1]
                   for _ in range(3)) for mb in sizes]
    slope, intercept = np.polyfit(sizes, seconds, 1)
    fitted = np.polyval([slope, intercept], sizes)
    r2 = 1 - np.sum((np.array(seconds) - fitted) ** 2) / np.sum((np.array(seconds) - np.mean(seconds)) ** 2)
    marginal = ["–"] + [f"{(b - a) / (y - x):.2f}" for x, y, a, b in zip(sizes, sizes[1:], seconds, seconds[1:])]
    lines = ["## Training time (train_tokenizer: both Parquet passes + BPE) vs sample size", "",
             "| sample (M chars) | seconds | linear fit | added s per added M chars |",
             "| ---: | ---: | ---: | ---: |"]
    lines += [f"| {mb:g} | {s:.2f} | {f:.2f} | {m} |" for mb, s, f, m in zip(sizes, seconds, fitted, marginal)]
    verdict = "linear" if r2 >= 0.98 else "not linear"
    # The intercept is mostly the length pass, which reads every shard whatever the sample size.
    lines += ["", f"Fit: {intercept:.2f} s + {slope:.2f} s per M chars, R² = {r2:.3f}: training time is "
                  f"{verdict} in the sample size over {sizes[0]:g}–{sizes[-1]:g} M chars, on top of a fixed cost "
                  f"({os.cpu_count()} cores, shared; fastest of 3 runs each)."]
    return lines


def _train_ours(params: TokenizerParams, shards: list[Path], out: Path) -> tuple[Path, float]:
    start = time.perf_counter()
    train_tokenizer(params, shards, out)
    return out, time.perf_counter() - start


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--sample-chars", type=int, default=5_000_000)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 2, 4, 8], help="M chars, for the timing")
    args = parser.parse_args()
    params = TokenizerParams(vocab_size=args.vocab_size, sample_chars=args.sample_chars)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shards = write_mix(work)
        print("\n".join(["# Tokenizer compression", "", *compare(params, shards, work), "",
                         *scaling(params, shards, work, args.sizes)]))


if __name__ == "__main__":
    main()
