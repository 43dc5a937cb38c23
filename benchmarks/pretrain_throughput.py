"""Pretraining throughput: our DeepSpeed trainer against a bare PyTorch loop, ZeRO 1/2/3 × fp32/bf16, and MFU.

    python benchmarks/pretrain_throughput.py compare [--rounds 3] [--zero-stages 0 2] [--steps 12] [--skip 3]
        [--threads 1] [--depth 4] [--seq 256] [--micro-batch 8] [--vocab 4096] [--token-dir data/tokenize]
    python benchmarks/pretrain_throughput.py loss [--rounds 3] [--seq 8192] [--width 512] [--vocab 32768] [--fp32]
    python benchmarks/pretrain_throughput.py startup [--tokens 200000000] [--shards 32] [--rounds 3]
    python benchmarks/pretrain_throughput.py zero [--ranks 2] [--steps 6] [--skip 2] [--depth 8] [--micro-batch 2]
    python benchmarks/pretrain_throughput.py mfu [--depths 16 24] [--compile] [--compile-mode blocks|model]
        [--loss chunked|plain] [--steps 200] [--skip 10]
        [--micro-batch 16] [--seq 2048] [--budget 480] [--out DIR]

compare: one rank, fp32, on this machine's CPU. The trainer is `components.train.run.main` (DeepSpeed ZeRO-0 and
ZeRO-2 by default, from infra/deepspeed/zero<N>.json filled by TrainConfig, gradient clipping at 1.0, the engine's loss all-reduce and
metrics); the bare loop is the same model (build_model, same seed), the same windows (TokenWindows), the same
loss, torch.optim.AdamW with the same parameter groups and betas, and backward(), step(), zero_grad(): no
DeepSpeed, no process group, no clipping. Each side is a fresh `torchrun --standalone --nproc_per_node 1`
process (the same launcher, environment and threads), the sides rotating, --rounds times each. A step's time
is the wall clock from the end of the step before to its end (all it costs, metrics included); the first --skip
steps of a run are warm-up (allocator, kernel selection) and not counted. The table has each run's tokens/s and
the tokens/s of the median step over all runs of a side. One thread by default (--threads): on a shared
machine, a second OpenMP thread waits at every parallel region for a core another process holds, and step
times swing 2-4x.

loss: the LM head and cross-entropy alone, on --seq tokens of random hidden states of --width channels (bf16 as
in the gpu presets, unless --fp32), forward and backward: the plain loss (the full logits, upcast to fp32) against
`chunked_token_losses` (the trainer's), each in a fresh process, alternating, --rounds times; the time and the
peak resident memory above what the process held before the loss (VmHWM, reset through /proc/self/clear_refs)
of the second of two passes.

startup: the contract check a rank makes at start-up (`require_compatible`), on --tokens synthetic tokens in
--shards shards, the shards' pages evicted from the page cache before each run (as on a node that did not
write them): without a recorded verdict (every token read twice and hashed, as before issue 16) and with one
(`record_verdict`, what the tokenize stage now writes).

zero: --ranks ranks under torchrun (torchrun gives each one thread when there are several), every ZeRO stage in
fp32 and bf16, once: tokens/s as above and each rank's peak resident memory (VmHWM) at its end.

mfu: one rank per run, bf16 and ZeRO-1 as in the gpu preset, each of --depths (eagerly, then compiled with
--compile) until --budget seconds are spent: tokens/s, MFU against the device's peak (components.train.mfu) and
peak memory; the table and each run's metrics go to --out too. benchmarks/gpu_pretrain.sh runs it on a GPU.

Token shards: synthetic (`write_shards`: the tokenize stage's format, checked by the trainer's contract), or
--token-dir for real ones (e.g. data/tokenize; its manifest gives the vocabulary). No run writes a checkpoint:
saving is not part of throughput, and at 780M parameters ZeRO-1's is 11 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.model import ModelParams, build_model, llama_config, parameter_count
from components.storage import file_md5
from components.tokenize import read_manifest
from components.tokenize.pack import token_dtype
from components.train import TokenWindows, TrainConfig, split_shards
from components.train.launch import die_with_parent
from components.train.report import read_rows

ROOT = Path(__file__).resolve().parents[1]
EOT = 1  # the model's eos_id by default
SYNTHETIC_DIGEST = "synthetic"


# --- inputs ---

def write_shards(out: Path, vocab: int, tokens: int, shards: int = 4, seed: int = 0) -> Path:
    """`tokens` ids in `shards` train shards in the tokenize stage's format (documents of 100-2,000 ids ending
    with the EOT, their offsets, a manifest with md5s), so the trainer's contract check accepts them. Ids are
    Zipf-distributed, as words are, so the loss falls from log(vocab) towards their entropy: enough to see
    that training trains; no speed depends on the ids."""
    rng = np.random.default_rng(seed)
    dtype = token_dtype(vocab)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(shards):
        size = tokens // shards
        ids = rng.zipf(1.2, size) % (vocab - 3) + 3  # 0-2 are the special ids: EOT only where a document ends
        ends = np.cumsum(rng.integers(100, 2000, size=size // 100 + 1))
        ends = np.append(ends[ends < size], size)
        ids[ends - 1] = EOT
        name = f"train-{index:05d}"
        ids.astype(dtype).tofile(out / f"{name}.bin")
        np.save(out / f"{name}.idx.npy", np.concatenate([[0], ends]).astype(np.int64))
        entries.append({"name": f"{name}.bin", "split": "train", "dtype": dtype.name, "tokens": size,
                        "documents": len(ends), "md5": file_md5(out / f"{name}.bin")})
    manifest = {"tokenizer_digest": SYNTHETIC_DIGEST, "vocab_size": vocab, "dtype": dtype.name, "eot_id": EOT,
                "seed": seed, "shards": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def train_config(token_dir: Path, ckpt_dir: Path, *, depth: int, seq_len: int, micro_batch: int, steps: int,
                 zero_stage: int = 2, bf16: bool = False, compile: bool = False, compile_mode: str = "blocks",
                 loss: str = "chunked") -> Path:
    """A TrainConfig for these shards as JSON next to `ckpt_dir` (what `components.train.run` reads): every
    step logged, no validation, the ZeRO template of infra/deepspeed/."""
    manifest = read_manifest(token_dir)
    template = json.loads((ROOT / "infra" / "deepspeed" / f"zero{zero_stage}.json").read_text())
    cfg = TrainConfig(model=ModelParams(depth=depth, seq_len=seq_len), vocab_size=manifest["vocab_size"],
                      tokenizer_digest=manifest["tokenizer_digest"], eos_id=manifest["eot_id"],
                      token_dir=token_dir, ckpt_dir=ckpt_dir, steps=steps, micro_batch=micro_batch, lr=1e-3,
                      warmup=min(10, steps), zero_stage=zero_stage, bf16=bf16, compile=compile,
                      compile_mode=compile_mode, options={"loss": loss}, log_every=1, deepspeed=template)
    path = ckpt_dir.with_suffix(".json")
    path.write_text(cfg.model_dump_json(indent=2) + "\n")
    return path


# --- the ranks (run under torchrun: `pretrain_throughput.py rank trainer|bare CFG.json`) ---

def trainer_rank(config_path: str) -> None:
    """`components.train.run.main`, measured: each logged row stamped with the wall clock (the engine's own
    tokens_per_s leaves out what runs between its timer's stops: the grad-norm read, the metrics line), and no
    checkpoint written at the end."""
    from components.train import engine, run

    imported = _memory_mib("VmRSS")

    def stamped_train(cfg: TrainConfig) -> dict:
        log = cfg.on_metrics
        return engine.train(cfg.model_copy(update={"on_metrics": lambda row: log(row | {"wall": time.time()})}))

    run.train, engine.save = stamped_train, lambda *args: None
    run.main(config_path)
    _report_rank(Path(json.loads(Path(config_path).read_text())["ckpt_dir"]), imported)


def bare_rank(config_path: str) -> None:
    """The same model, windows, loss and optimizer as the trainer, in the plainest PyTorch loop; logs rows like
    the trainer's to ckpt_dir/metrics.jsonl."""
    die_with_parent()
    imported = _memory_mib("VmRSS")
    cfg = TrainConfig(**json.loads(Path(config_path).read_text()))
    if cfg.grad_accum != 1 or int(os.environ.get("WORLD_SIZE", "1")) != 1 or cfg.bf16:
        raise ValueError("the bare loop is one rank in fp32 without gradient accumulation")
    model = build_model(cfg.model, cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id, seed=cfg.seed)
    from components.train.engine import param_groups

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    windows = TokenWindows(split_shards(cfg.token_dir, "train"), cfg.model.seq_len, cfg.micro_batch, cfg.seed)
    cfg.ckpt_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.ckpt_dir / "metrics.jsonl", "w") as metrics:
        for step in range(cfg.steps):
            batch = windows.batch(step, 0)
            logits = model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            metrics.write(json.dumps({"step": step + 1, "loss": loss.item(), "wall": time.time()}) + "\n")
    _report_rank(cfg.ckpt_dir, imported)


def _memory_mib(field: str) -> float:
    """A memory line of /proc/self/status in MiB: VmRSS now, VmHWM the peak so far."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _report_rank(ckpt_dir: Path, imported_mib: float) -> None:
    """ckpt_dir/rank-N.json: this rank's peak resident memory, what of it came after the imports (the libraries'
    code is most of a small run's), and the GPU's peak allocation."""
    peak = _memory_mib("VmHWM")
    result = {"rank": int(os.environ.get("RANK", "0")), "peak_rss_mib": peak, "after_imports_mib": peak - imported_mib}
    if torch.cuda.is_available():
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    (ckpt_dir / f"rank-{result['rank']}.json").write_text(json.dumps(result) + "\n")


# --- the parent ---

def launch(side: str, config: Path, ranks: int, threads: int | None = None, timeout: float = 900,
           quiet: bool = True) -> list[dict]:
    """Run one side under torchrun (`threads` threads per rank, else torchrun's choice; its output shown unless
    `quiet`, else only on failure); returns each rank's report."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               str(Path(__file__).resolve()), "rank", side, str(config)]
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=quiet, text=True, timeout=timeout,
                              preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{side} stopped after {timeout:.0f} s") from None
    if proc.returncode:
        shown = f":\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}" if quiet else " (its output is above)"
        raise RuntimeError(f"{side} exited with {proc.returncode}{shown}")
    ckpt_dir = Path(json.loads(config.read_text())["ckpt_dir"])
    return [json.loads((ckpt_dir / f"rank-{rank}.json").read_text()) for rank in range(ranks)]


def steady(metrics_file: Path, skip: int, tokens_per_step: int) -> dict:
    """{seconds: the wall time of each step after `skip` (end of the one before to its end: everything a
    step costs), rate: their tokens/s, rows: the steps' logged rows, loss: the last step's}."""
    rows = read_rows(metrics_file)
    walls = [row["wall"] for row in rows][skip - 1:]
    seconds = [end - start for start, end in zip(walls, walls[1:])]
    return {"seconds": seconds, "rate": tokens_per_step * len(seconds) / sum(seconds), "rows": rows[skip:],
            "loss": rows[-1]["loss"]}


def median_rate(runs: list[dict], tokens_per_step: int) -> float:
    """Tokens/s of the median step over all runs: a burst of load from another process moves it less than a
    mean would."""
    return tokens_per_step / statistics.median(s for run in runs for s in run["seconds"])


def compare(args, token_dir: Path, work: Path) -> None:
    stages = args.zero_stages or [args.zero_stage]
    sides = ["bare", *(f"trainer-zero{stage}" for stage in stages)]
    runs = {side: [] for side in sides}
    tokens_per_step = args.micro_batch * args.seq
    for round_ in range(args.rounds):
        order = sides[round_ % len(sides):] + sides[:round_ % len(sides)]  # no side always goes first
        for side in order:
            ckpt = work / f"{side}-{round_}"
            stage = int(side.removeprefix("trainer-zero")) if side != "bare" else 2
            config = train_config(token_dir, ckpt, depth=args.depth, seq_len=args.seq,
                                  micro_batch=args.micro_batch, steps=args.steps, zero_stage=stage)
            launch(side.split("-")[0], config, 1, args.threads)
            runs[side].append(steady(ckpt / "metrics.jsonl", args.skip, tokens_per_step))
            print(f"round {round_ + 1} {side}: {runs[side][-1]['rate']:,.0f} tokens/s", flush=True)
    bare = median_rate(runs["bare"], tokens_per_step)
    print(f"\ndepth {args.depth}, seq {args.seq}, micro-batch {args.micro_batch}, vocab {args.vocab}, fp32, 1 rank, "
          f"{args.threads} thread(s); steps {args.skip + 1}-{args.steps} of each run timed; load average "
          f"{os.getloadavg()[0]:.1f} after\n")
    print("| side | tokens/s per round | tokens/s of the median step | ms/step | vs bare |")
    print("|---|---|---:|---:|---:|")
    for side, results in runs.items():
        rate = median_rate(results, tokens_per_step)
        rounds = ", ".join(f"{run['rate']:,.0f}" for run in results)
        print(f"| {side} | {rounds} | {rate:,.0f} | {1000 * tokens_per_step / rate:.0f} | {rate / bare:.3f}x |")


# --- the loss alone: plain vs chunked (`pretrain_throughput.py rank loss VARIANT:SEQ:WIDTH:VOCAB:BF16`) ---

def loss_rank(spec: str) -> None:
    """One variant's loss, forward and backward, twice; prints the second pass's seconds and peak memory."""
    from components.train.objectives.causal_lm import chunked_token_losses

    die_with_parent()
    variant, seq, width, vocab, bf16 = spec.split(":")
    dtype = torch.bfloat16 if bf16 == "1" else torch.float32
    torch.manual_seed(0)
    head = torch.nn.Linear(int(width), int(vocab), bias=False, dtype=dtype)
    hidden = torch.randn(1, int(seq), int(width), dtype=dtype, requires_grad=True)
    targets = torch.randint(0, int(vocab), (1, int(seq)))

    def plain() -> torch.Tensor:  # the loss before issue 16: the whole logits, then their fp32 copy
        return F.cross_entropy(head(hidden).float().flatten(0, 1), targets.flatten(), reduction="none")

    losses = plain if variant == "plain" else lambda: chunked_token_losses(head, hidden, targets)
    for _ in range(2):  # the first pass pays the allocator's and the kernels' first-use costs
        head.zero_grad(), hidden.grad is not None and hidden.grad.zero_()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
        before, began = _memory_mib("VmRSS"), time.perf_counter()
        loss = losses().mean()
        loss.backward()
        seconds = time.perf_counter() - began
    print(json.dumps({"variant": variant, "seconds": seconds, "peak_mib": _memory_mib("VmHWM") - before,
                      "loss": loss.item(), "grad_sum": float(head.weight.grad.float().abs().sum())}), flush=True)


def loss_table(args, token_dir: Path, work: Path) -> None:
    spec = f"{args.seq}:{args.width}:{args.vocab}:{0 if args.fp32 else 1}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    runs = {"plain": [], "chunked": []}
    for round_ in range(args.rounds):
        for variant in (["plain", "chunked"] if round_ % 2 == 0 else ["chunked", "plain"]):
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "rank", "loss", f"{variant}:{spec}"],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=True)
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {variant}: {runs[variant][-1]}", flush=True)
    logits_gib = args.seq * args.vocab * 4 / 2**30
    print(f"\nLM head + cross-entropy, forward and backward: {args.seq} tokens, width {args.width}, vocab "
          f"{args.vocab}, {'fp32' if args.fp32 else 'bf16'}, {args.threads} thread(s) (fp32 logits alone: "
          f"{logits_gib:.2f} GiB); load average {os.getloadavg()[0]:.1f} after\n")
    print("| loss | seconds (median) | peak MiB above the inputs (median) | loss | vs plain, time | vs plain, memory |")
    print("|---|---:|---:|---:|---:|---:|")
    medians = {v: (statistics.median(r["seconds"] for r in rs), statistics.median(r["peak_mib"] for r in rs))
               for v, rs in runs.items()}
    for variant, (seconds, peak) in medians.items():
        print(f"| {variant} | {seconds:.2f} | {peak:,.0f} | {runs[variant][0]['loss']:.6f} | "
              f"{seconds / medians['plain'][0]:.2f}x | {peak / medians['plain'][1]:.2f}x |")


# --- a rank's start-up contract check, before and after the recorded verdict ---

def startup_table(args, token_dir: Path, work: Path) -> None:
    from components.tokenize import require_compatible
    from components.tokenize.contract import VERDICT, check_contract, record_verdict

    manifest = read_manifest(token_dir)
    size = sum((token_dir / s["name"]).stat().st_size for s in manifest["shards"])

    def timed() -> float:
        _evict(token_dir)
        began = time.perf_counter()
        require_compatible(token_dir, manifest["vocab_size"], manifest["tokenizer_digest"])
        return time.perf_counter() - began

    (token_dir / VERDICT).unlink(missing_ok=True)
    before = [timed() for _ in range(args.rounds)]
    record_verdict(token_dir, check_contract(token_dir, manifest["vocab_size"], manifest["tokenizer_digest"],
                                             manifest["eot_id"]))
    after = [timed() for _ in range(args.rounds)]
    print(f"\n{args.tokens:,} tokens in {len(manifest['shards'])} shards ({size / 2**30:.2f} GiB), page cache "
          f"evicted before each run; load average {os.getloadavg()[0]:.1f} after\n")
    print("| a rank's contract check | seconds per run | median |")
    print("|---|---|---:|")
    for name, times in (("full (no recorded verdict; every rank before issue 16)", before),
                        ("recorded verdict + cheap checks", after)):
        print(f"| {name} | {', '.join(f'{t:.3f}' for t in times)} | {statistics.median(times):.3f} |")


def _evict(folder: Path) -> None:
    """Drop the folder's files from the page cache (their clean pages), so the next read goes to the disk."""
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def zero_table(args, token_dir: Path, work: Path) -> None:
    tokens_per_step = args.micro_batch * args.seq * args.ranks
    print(f"depth {args.depth}, seq {args.seq}, micro-batch {args.micro_batch} per rank, {args.ranks} ranks; "
          f"steps {args.skip + 1}-{args.steps} timed\n")
    print("| ZeRO | precision | tokens/s | ms/step | final loss | peak RSS per rank, MiB (after the imports) |")
    print("|---|---|---:|---:|---:|---|")
    for stage in (1, 2, 3):
        for bf16 in (False, True):
            ckpt = work / f"zero{stage}-{'bf16' if bf16 else 'fp32'}"
            config = train_config(token_dir, ckpt, depth=args.depth, seq_len=args.seq,
                                  micro_batch=args.micro_batch, steps=args.steps, zero_stage=stage, bf16=bf16)
            ranks = launch("trainer", config, args.ranks)
            run = steady(ckpt / "metrics.jsonl", args.skip, tokens_per_step)
            rate = median_rate([run], tokens_per_step)
            peaks = " / ".join(f"{rank['peak_rss_mib']:,.0f} ({rank['after_imports_mib']:,.0f})" for rank in ranks)
            print(f"| {stage} | {'bf16' if bf16 else 'fp32'} | {rate:,.0f} | {1000 * tokens_per_step / rate:.0f} | "
                  f"{run['loss']:.3f} | {peaks} |", flush=True)


def mfu_table(args, token_dir: Path, work: Path) -> None:
    began = time.monotonic()
    args.zero_stage = 1 if args.zero_stage is None else args.zero_stage
    tokens_per_step = args.micro_batch * args.seq
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    lines = [f"{device}; one rank, {'fp32' if args.fp32 else 'bf16'}, ZeRO-{args.zero_stage}, micro-batch "
             f"{args.micro_batch} x seq {args.seq}, vocab {args.vocab}; steps {args.skip + 1}-{args.steps} timed", "",
             "| run | parameters | tokens/s | ms/step | MFU | MFU, engine's step timer | peak GPU GiB | peak RSS GiB "
             "| final loss |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for depth in args.depths:
        for compiled in [False, True] if args.compile else [False]:
            name = f"d{depth}{'-compile' if compiled else ''}"
            left = args.budget - (time.monotonic() - began)
            try:
                if left < 60:
                    raise TimeoutError(f"skipped: {args.budget:.0f} s budget spent")
                lines.append(_mfu_row(args, token_dir, work / name, depth, compiled, left, tokens_per_step))
            except (RuntimeError, TimeoutError) as error:
                print(error, flush=True)
                lines.append(f"| {name} | {str(error).splitlines()[0][:100]} |")
            if args.out and (work / name / "metrics.jsonl").exists():
                shutil.copy(work / name / "metrics.jsonl", args.out / f"metrics-{name}.jsonl")
            print(lines[-1], flush=True)
            if args.out:  # after every run: a run cut off by the device's time limit keeps the rows before it
                (args.out / "results.md").write_text("\n".join(lines) + "\n")


def _mfu_row(args, token_dir: Path, ckpt: Path, depth: int, compiled: bool, timeout: float,
             tokens_per_step: int) -> str:
    config = train_config(token_dir, ckpt, depth=depth, seq_len=args.seq, micro_batch=args.micro_batch,
                          steps=args.steps, zero_stage=args.zero_stage, bf16=not args.fp32, compile=compiled,
                          compile_mode=args.compile_mode, loss=args.loss)
    rank, = launch("trainer", config, 1, timeout=timeout, quiet=False)
    result = json.loads((ckpt / "result.json").read_text())
    run = steady(ckpt / "metrics.jsonl", args.skip, tokens_per_step)
    rate = median_rate([run], tokens_per_step)
    mfu = result["train_flops_per_token"] * rate / result["peak_flops"]
    own = statistics.median(row["mfu"] for row in run["rows"])
    params = parameter_count(llama_config(ModelParams(depth=depth, seq_len=args.seq), args.vocab, 0, 1, 2))["total"]
    gpu = f"{rank['peak_gpu_gib']:.1f}" if "peak_gpu_gib" in rank else "-"
    return (f"| d{depth}{' compiled' if compiled else ''} | {params / 1e6:.0f}M | {rate:,.0f} | "
            f"{1000 * tokens_per_step / rate:.0f} | {mfu:.1%} | {own:.1%} | {gpu} | {rank['peak_rss_mib'] / 1024:.1f} "
            f"| {run['loss']:.3f} |")


# Per mode: the zero table uses a larger model than compare, so that its weights and optimizer states (not the
# libraries' code) are what the memory column shows, and fewer sequences, so that six runs take a few minutes;
# mfu is the gpu preset's shape (params.yaml) with enough tokens that windows rarely repeat in a run.
DEFAULTS = {"compare": {"steps": 12, "skip": 3, "depth": 4, "micro_batch": 8, "seq": 256, "vocab": 4096,
                        "tokens": 4_000_000, "zero_stages": [0, 2]},
            "loss": {"seq": 8192, "width": 512, "vocab": 32768, "tokens": 100_000},
            "startup": {"vocab": 32768, "tokens": 200_000_000, "shards": 32},
            "zero": {"steps": 6, "skip": 2, "depth": 8, "micro_batch": 2, "seq": 256, "vocab": 4096,
                     "tokens": 4_000_000},
            "mfu": {"steps": 200, "skip": 10, "micro_batch": 16, "seq": 2048, "vocab": 32768, "tokens": 64_000_000}}


def main() -> None:
    if sys.argv[1:2] == ["rank"]:  # one rank, started by launch() through torchrun
        {"trainer": trainer_rank, "bare": bare_rank, "loss": loss_rank}[sys.argv[2]](sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=list(DEFAULTS))
    parser.add_argument("--steps", type=int, help="steps per run")
    parser.add_argument("--skip", type=int, help="warm-up steps not timed, at least 1")
    parser.add_argument("--depth", type=int, help="compare, zero: the model's size dial (components.model)")
    parser.add_argument("--seq", type=int)
    parser.add_argument("--micro-batch", type=int, help="sequences per rank and step")
    parser.add_argument("--vocab", type=int, help="synthetic shards' vocabulary")
    parser.add_argument("--tokens", type=int, help="synthetic shards' size")
    parser.add_argument("--shards", type=int, help="synthetic shards' count (default 4; startup 32)")
    parser.add_argument("--width", type=int, help="loss: the hidden states' channels")
    parser.add_argument("--token-dir", type=Path, help="real token shards instead of synthetic ones")
    parser.add_argument("--rounds", type=int, default=3, help="compare, loss, startup: runs of each side")
    parser.add_argument("--threads", type=int, default=1, help="compare, loss: threads of the one process")
    parser.add_argument("--ranks", type=int, default=2, help="zero: ranks")
    parser.add_argument("--depths", type=int, nargs="+", default=[16, 24], help="mfu: one run per depth")
    parser.add_argument("--compile", action="store_true", help="mfu: also a torch.compile run per depth")
    parser.add_argument("--fp32", action="store_true", help="mfu, loss: fp32 instead of bf16")
    parser.add_argument("--compile-mode", choices=["blocks", "model"], default="blocks",
                        help="mfu with --compile: each decoder block compiled (the trainer's default) or the whole model")
    parser.add_argument("--loss", choices=["chunked", "plain"], default="chunked",
                        help="mfu: the trainer's chunked LM loss, or all the logits at once")
    parser.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3],
                        help="ZeRO stage of the trainer (compare: one stage instead of --zero-stages; mfu: default 1)")
    parser.add_argument("--zero-stages", type=int, nargs="+", choices=[0, 1, 2, 3],
                        help="compare: the trainer at each of these stages, side by side (default 0 2)")
    parser.add_argument("--budget", type=float, default=480, help="mfu: seconds; no run starts after them")
    parser.add_argument("--out", type=Path, help="mfu: folder for the table and each run's metrics")
    args = parser.parse_args()
    if args.mode == "compare" and args.zero_stage is not None:
        args.zero_stages = [args.zero_stage]
    for name, value in DEFAULTS[args.mode].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.skip = max(1, args.skip or 1)
    if args.mode == "startup" and args.token_dir:
        parser.error("startup writes and removes contract.json in its shards' folder: synthetic shards only")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pretrain-bench-"))
    try:
        if args.token_dir:
            args.vocab = read_manifest(args.token_dir)["vocab_size"]
        token_dir = args.token_dir.resolve() if args.token_dir else write_shards(work / "tokens", args.vocab, args.tokens,
                                                                                     args.shards or 4)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before; shards {token_dir}", flush=True)
        modes = {"compare": compare, "zero": zero_table, "mfu": mfu_table, "loss": loss_table, "startup": startup_table}
        modes[args.mode](args, token_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
