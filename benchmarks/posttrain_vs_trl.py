"""Post-training throughput: our engine's SFT, reward-model and DPO objectives against TRL's SFTTrainer,
RewardTrainer and DPOTrainer, side by side.

    python -m benchmarks.posttrain_vs_trl [--objectives sft reward dpo] [--rounds 2] [--steps 8] [--skip 3]
        [--zero-stage 2] [--depth 4] [--seq 512] [--micro-batch 4] [--vocab 4096] [--threads 1] [--no-pack]

Run it as a module from the repository root (it reuses benchmarks/pretrain_throughput.py's launcher). Both
sides get the same model (`components.model.build_model`, depth --depth, saved as a Hugging Face folder), the
same tokenized data, sequence length and micro-batch, one rank, fp32, on the CPU:

- ours: `components.train.run.main` under torchrun, exactly as pretrain_throughput.py's `compare` runs it
  (DeepSpeed, ZeRO --zero-stage from infra/deepspeed/, clipping at 1.0, the engine's metrics line per step);
- TRL 1.16: the trainer under the same torchrun launcher, environment and threads, with what makes it compute
  what ours computes: fp32 (`bf16=False`; TRL's default is bf16) and no activation recomputation
  (`activation_checkpointing=False`; TRL's default is on, ours off). Its optimizer is its default (fused AdamW).

Data: synthetic, of realistic lengths (`conversation`, `pair`: Alpaca/HH-like prompts and replies of tens to
hundreds of tokens; no speed depends on which ids they are). SFT: ours packs conversations into rows of --seq
tokens (position ids restart per conversation, the project's default); TRL packs with its default `bfd`
strategy, which is padding-free (a micro-batch is one flat sequence); --no-pack gives one conversation per row
on both sides (ours pads each row to --seq, TRL to the batch's longest). Reward and DPO: TRL reads the pairs in
our sampler's order (`train_sampling_strategy="sequential"`), so both sides train on identical batches. DPO:
both sides compute the reference log-probabilities once, before training (ours: the stage's
`reference_logps`, TRL: `precompute_ref_log_probs=True`); the policy's step is then the same work.

Tokens are counted the same way on both sides: the non-padding tokens of a step (ours: the objective's
`tokens(batch)`; TRL: its own `num_tokens`, the attention mask's sum or the unpadded length). The sides
alternate, --rounds times each per objective, each run a fresh process. A step's time is the wall clock from
the end of the step before to its end (its metrics included); the first --skip steps are warm-up. The table
gives each run's tokens/s and, per side, the median over all runs' steps of a step's tokens / its time.

tests/unit/test_trl_crosscheck.py checks, with the trainer settings and data conversion below, that TRL's
losses on one batch equal our objectives'.
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
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, TrainerCallback

from benchmarks.pretrain_throughput import ROOT, launch
from components.model import ModelParams, build_model
from components.tokenizer import tokenizer_digest
from components.train import TrainConfig
from components.train.launch import die_with_parent
from components.train.objectives import build_model as objective_model
from components.train.objectives import objective_for
from components.train.objectives.dpo import REFERENCE, reference_logps
from components.train.objectives.pairs import Pairs, read_pairs
from components.train.objectives.sampling import EpochSampler
from components.train.objectives.sft import read_examples
from components.train.params import METRICS
from components.train.report import read_rows

# The pipeline tokenizer's special ids (components/tokenizer: bos, eos, pad, im_start, im_end), and the ids the
# synthetic chats use for the role names and the newline after a header; text is drawn from the ids above them.
BOS, EOS, PAD, IM_START, IM_END = range(5)
USER, ASSISTANT, NEWLINE = 5, 6, 7
FIRST_TEXT_ID = 8


# --- a tokenizer whose words are the ids ---

def id_word(token_id: int) -> str:
    return f"<{token_id}>"  # delimited, so that no word ends with another ("<11>" does not end with "<1>")


def id_text(ids) -> str:
    return " ".join(id_word(int(i)) for i in ids)


def id_tokenizer(vocab: int):
    """A fast tokenizer whose word "<17>" is id 17 and nothing else: TRL's trainers need a tokenizer (for the pad
    token, and DPOTrainer tokenizes text itself), and with this one the text `id_text(ids)` tokenizes back to
    exactly `ids`, so TRL trains on the very ids ours does. An unknown word is an error, not a silent <unk>."""
    core = Tokenizer(models.WordLevel({id_word(i): i for i in range(vocab)}))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=id_word(BOS), eos_token=id_word(EOS),
                                   pad_token=id_word(PAD))


# --- our data, as TRL's trainers take it ---

def sft_dataset(examples: list[tuple[np.ndarray, np.ndarray]]):
    """Pre-tokenized conversations: TRL 1.16 makes a token a target exactly where `assistant_masks` is 1 and the
    model shifts the labels, which is what our labels (token t+1's id at position t where its mask is 1) are."""
    return Dataset.from_dict({"input_ids": [ids.tolist() for ids, _ in examples],
                              "assistant_masks": [mask.astype(int).tolist() for _, mask in examples]})


def reward_dataset(pairs: Pairs, index, margin: float = 0.0):
    """Pre-tokenized pairs (the whole conversation per side); TRL takes a margin per pair, ours one for all."""
    columns = {"chosen_ids": [pairs.chosen[i].tolist() for i in index],
               "rejected_ids": [pairs.rejected[i].tolist() for i in index]}
    return Dataset.from_dict(columns | ({"margin": [margin] * len(columns["chosen_ids"])} if margin else {}))


def dpo_dataset(pairs: Pairs, index):
    """DPOTrainer only takes text, which it tokenizes itself: the ids as id words. The prompt is what precedes
    the reply mask (the same on both sides of a pair); the completion is the masked reply."""
    def split(ids: np.ndarray, mask: np.ndarray) -> tuple[str, str]:
        start = len(ids) - int(mask.sum())
        if not mask[start:].all():
            raise ValueError("a reply mask that is not the sequence's end: TRL's completion is everything after "
                             "the prompt")
        return id_text(ids[:start]), " " + id_text(ids[start:])

    rows = []
    for i in index:
        prompt, chosen = split(pairs.chosen[i], pairs.chosen_mask[i])
        rejected_prompt, rejected = split(pairs.rejected[i], pairs.rejected_mask[i])
        if prompt != rejected_prompt:
            raise ValueError(f"pair {i}: chosen and rejected have different prompts")
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return Dataset.from_list(rows)


def trl_args(config_class, out_dir: Path, micro_batch: int, steps: int = 1, seed: int = 0, **options):
    """A TRL config that computes what ours computes: fp32 (TRL defaults to bf16) without activation
    recomputation (TRL defaults to gradient checkpointing), on the CPU, logging every step, saving nothing."""
    return config_class(output_dir=str(out_dir), per_device_train_batch_size=micro_batch, max_steps=steps,
                        seed=seed, use_cpu=True, bf16=False, activation_checkpointing=False, report_to="none",
                        save_strategy="no", logging_steps=1, disable_tqdm=True, **options)


def trl_trainer(cfg: TrainConfig, out_dir: Path):
    """TRL's trainer for what `cfg` trains with our engine: its model, data, sequence length and batch."""
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(cfg.init_from)
    model, seq = objective_model(cfg), cfg.model.seq_len
    if cfg.objective == "sft":
        args = trl_args(SFTConfig, out_dir, cfg.micro_batch, cfg.steps, cfg.seed, packing=cfg.pack, max_length=seq)
        return SFTTrainer(model=model, args=args, train_dataset=sft_dataset(read_examples(cfg.token_dir, "train")),
                          processing_class=tokenizer)
    pairs = read_pairs(cfg.token_dir, "train")
    sampler = EpochSampler(len(pairs), cfg.seed, cfg.micro_batch, 1, 1)
    order = np.concatenate([sampler.batch(step, 0, 0) for step in range(cfg.steps)])  # our batches, in our order
    same_batches = {"train_sampling_strategy": "sequential", "max_length": seq}
    if cfg.objective == "reward":
        args = trl_args(RewardConfig, out_dir, cfg.micro_batch, cfg.steps, cfg.seed, **same_batches)
        return RewardTrainer(model=model, args=args, train_dataset=reward_dataset(pairs, order),
                             processing_class=tokenizer)
    args = trl_args(DPOConfig, out_dir, cfg.micro_batch, cfg.steps, cfg.seed, beta=cfg.options["beta"],
                    loss_type=["sigmoid"], precompute_ref_log_probs=True, **same_batches)
    return DPOTrainer(model=model, args=args, train_dataset=dpo_dataset(pairs, order), processing_class=tokenizer)


# --- synthetic data of realistic lengths ---

def _text(rng, vocab: int, median: int, longest: int) -> list[int]:
    """Ids of a text whose length is log-normal around `median` tokens (prompts and replies are long-tailed)."""
    length = int(np.clip(rng.lognormal(np.log(median), 0.6), 4, longest))
    return rng.integers(FIRST_TEXT_ID, vocab, size=length).tolist()


def conversation(rng, vocab: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids and assistant mask of a chat in the pipeline's layout (components/sft_data/chat.py): one to three
    turns, each <|im_start|> role newline text <|im_end|> newline, the last newline replaced by the end-of-text.
    Trained: each reply with its <|im_end|>, and the end-of-text. User turns ~40 tokens, replies ~120 (Alpaca-like)."""
    while True:
        ids, mask = [], []
        for _ in range(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])):
            user = [IM_START, USER, NEWLINE, *_text(rng, vocab, 40, seq // 4), IM_END, NEWLINE]
            reply = [*_text(rng, vocab, 120, seq // 2), IM_END]
            ids += [*user, IM_START, ASSISTANT, NEWLINE, *reply, NEWLINE]
            mask += [0] * (len(user) + 3) + [1] * len(reply) + [0]
        ids[-1], mask[-1] = EOS, 1
        if len(ids) <= seq:
            return np.array(ids), np.array(mask, dtype=bool)


def pair(rng, vocab: int, seq: int) -> dict[str, list[int]]:
    """A preference pair in the preferences stage's format: a prompt of ~60 tokens and two replies of ~150
    (HH-RLHF-like), each reply ending <|im_end|><|end_of_text|> and masked."""
    while True:
        prompt = [IM_START, USER, NEWLINE, *_text(rng, vocab, 60, seq // 4), IM_END, NEWLINE, IM_START, ASSISTANT,
                  NEWLINE]
        sides = {}
        for side in ("chosen", "rejected"):
            reply = [*_text(rng, vocab, 150, seq // 2), IM_END, EOS]
            sides[f"{side}_ids"], sides[f"{side}_mask"] = prompt + reply, [0] * len(prompt) + [1] * len(reply)
        if max(len(sides["chosen_ids"]), len(sides["rejected_ids"])) <= seq:
            return sides


def prepare(args, work: Path) -> tuple[Path, Path, int]:
    """The base model folder (with the id tokenizer), the data folder both sides read (SFT examples, pairs and
    the pairs' reference log-probabilities, as the sft_data, preferences and dpo stages write them) and the
    model's parameter count."""
    base, data = work / "base", work / "data"
    model = build_model(ModelParams(depth=args.depth, seq_len=args.seq), args.vocab, BOS, EOS, PAD, seed=0)
    model.save_pretrained(base)
    id_tokenizer(args.vocab).save_pretrained(base)
    data.mkdir()
    rng = np.random.default_rng(0)
    per_run = args.steps * args.micro_batch
    chats = [conversation(rng, args.vocab, args.seq) for _ in range(per_run * max(1, args.seq // 100))]
    pq.write_table(pa.table({"input_ids": [ids.tolist() for ids, _ in chats],
                             "assistant_mask": [mask.astype(np.int8).tolist() for _, mask in chats]}),
                   data / "examples-train.parquet")
    pairs = [pair(rng, args.vocab, args.seq) for _ in range(per_run)]  # one epoch is one run
    pq.write_table(pa.table({key: [p[key] for p in pairs] for key in pairs[0]}), data / "pairs-train.parquet")
    (data / "manifest.json").write_text(json.dumps({"tokenizer_digest": tokenizer_digest(base),
                                                    "vocab_size": args.vocab}))
    if "dpo" in args.objectives:
        np.save(data / REFERENCE.format(split="train"), reference_logps(model.eval(), read_pairs(data, "train"), PAD))
    return base, data, sum(weight.numel() for weight in model.parameters())


def run_config(args, objective: str, base: Path, data: Path, ckpt_dir: Path) -> Path:
    """Our TrainConfig for one run as JSON next to `ckpt_dir`; TRL's rank builds its trainer from it too."""
    template = json.loads((ROOT / "infra" / "deepspeed" / f"zero{args.zero_stage}.json").read_text())
    cfg = TrainConfig(objective=objective, init_from=base, model=ModelParams(depth=args.depth, seq_len=args.seq),
                      vocab_size=args.vocab, tokenizer_digest=tokenizer_digest(base), token_dir=data,
                      ckpt_dir=ckpt_dir, steps=args.steps, micro_batch=args.micro_batch, lr=1e-5, warmup=0,
                      zero_stage=args.zero_stage, bf16=False, log_every=1, pack=args.pack, bos_id=BOS, eos_id=EOS,
                      pad_id=PAD, options={"beta": 0.1} if objective == "dpo" else {}, deepspeed=template)
    path = ckpt_dir.with_suffix(".json")
    path.write_text(cfg.model_dump_json(indent=2) + "\n")
    return path


# --- TRL's rank (run under torchrun: `posttrain_vs_trl.py rank CFG.json`) ---

class StepStamps(TrainerCallback):
    """A row per step in `path`, like our engine's metrics.jsonl: the step, the wall clock at its end (after its
    log, as ours is stamped after its metrics line) and TRL's count of the non-padding tokens trained so far."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and "num_tokens" in logs:  # a step's log, not the run's summary
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "wall": time.time(),
                                    "num_tokens": logs["num_tokens"]}) + "\n")


def trl_rank(config_path: str) -> None:
    cfg = TrainConfig(**json.loads(Path(config_path).read_text()))
    cfg.ckpt_dir.mkdir(parents=True, exist_ok=True)
    trainer = trl_trainer(cfg, cfg.ckpt_dir / "trl")
    trainer.add_callback(StepStamps(cfg.ckpt_dir / METRICS))
    trainer.train()


def launch_trl(config: Path, threads: int, timeout: float = 900) -> None:
    """TRL's rank under torchrun, started as pretrain_throughput.launch starts ours: the same launcher,
    environment and threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               str(Path(__file__).resolve()), "rank", str(config)]
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"TRL stopped after {timeout:.0f} s") from None
    if proc.returncode:
        raise RuntimeError(f"TRL exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


# --- the parent ---

def our_tokens(config: Path) -> list[int]:
    """The non-padding tokens of each of our run's steps: batches are a pure function of the step, so the
    objective that trained them gives them again."""
    cfg = TrainConfig(**json.loads(config.read_text()))
    objective = objective_for(cfg)
    batches = objective.train_batches(0, 1)
    return [objective.tokens(batches(step, 0)) for step in range(cfg.steps)]


def trl_tokens(rows: list[dict]) -> list[int]:
    totals = [0] + [int(row["num_tokens"]) for row in rows]
    return [after - before for before, after in zip(totals, totals[1:])]


def timed_steps(rows: list[dict], tokens: list[int], skip: int) -> list[tuple[float, int]]:
    """(seconds, tokens) of every step after the first `skip`, each timed from the end of the step before."""
    walls = [row["wall"] for row in rows]
    if len(walls) != len(tokens):
        raise RuntimeError(f"{len(walls)} steps logged, {len(tokens)} expected")
    return [(end - start, count) for start, end, count in zip(walls[skip - 1:], walls[skip:], tokens[skip:])]


def run_rate(steps: list[tuple[float, int]]) -> float:
    return sum(tokens for _, tokens in steps) / sum(seconds for seconds, _ in steps)


def median_step(runs: list[list[tuple[float, int]]]) -> tuple[float, float]:
    """(tokens/s, seconds) of the median step over all runs: a burst of load from another process moves a
    median less than a mean. Steps differ in tokens (pairs are padded per batch), so the rate is per step."""
    steps = [step for run in runs for step in run]
    return statistics.median(tokens / seconds for seconds, tokens in steps), statistics.median(s for s, _ in steps)


def compare(args, objective: str, base: Path, data: Path, work: Path) -> dict[str, list]:
    """Both sides, alternating, --rounds runs each: the timed steps of every run."""
    runs: dict[str, list] = {"ours": [], "trl": []}
    ours_per_step = our_tokens(run_config(args, objective, base, data, work / f"{objective}-batches"))  # every run's
    for round_ in range(args.rounds):
        for side in ("ours", "trl") if round_ % 2 == 0 else ("trl", "ours"):  # no side always goes first
            ckpt = work / f"{objective}-{side}-{round_}"
            config = run_config(args, objective, base, data, ckpt)
            if side == "ours":
                launch("trainer", config, 1, args.threads)
                tokens = ours_per_step
            else:
                launch_trl(config, args.threads)
                tokens = trl_tokens(read_rows(ckpt / METRICS))
            runs[side].append(timed_steps(read_rows(ckpt / METRICS), tokens, args.skip))
            print(f"{objective} round {round_ + 1} {side}: {run_rate(runs[side][-1]):,.0f} tokens/s (load average "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
    if objective != "sft" and [t for _, t in runs["trl"][0]] != [t for _, t in runs["ours"][0]]:
        raise RuntimeError(f"{objective}: TRL trained on other batches than ours (tokens per step differ)")
    return runs


def table(args, results: dict[str, dict[str, list]]) -> str:
    lines = ["| objective | side | tokens/s per round | tokens/s, median step | ms/step, median | tokens/step | "
             "ours / TRL |", "|---|---|---|---:|---:|---:|---:|"]
    names = {"ours": f"ours (ZeRO-{args.zero_stage})", "trl": "TRL 1.16"}
    for objective, runs in results.items():
        ours_rate = median_step(runs["ours"])[0]
        for side in ("ours", "trl"):
            rate, seconds = median_step(runs[side])
            rounds = ", ".join(f"{run_rate(run):,.0f}" for run in runs[side])
            tokens = statistics.mean(count for run in runs[side] for _, count in run)
            ratio = f"**{ours_rate / rate:.3f}x**" if side == "trl" else ""
            lines.append(f"| {objective} | {names[side]} | {rounds} | {rate:,.0f} | {1000 * seconds:.0f} | "
                         f"{tokens:,.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["rank"]:  # TRL's rank, started by launch_trl() through torchrun
        trl_rank(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objectives", nargs="+", choices=["sft", "reward", "dpo"], default=["sft", "reward", "dpo"])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side per objective, alternating")
    parser.add_argument("--steps", type=int, default=8, help="steps per run")
    parser.add_argument("--skip", type=int, default=3, help="warm-up steps not timed, at least 1")
    parser.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=2, help="our engine's ZeRO stage")
    parser.add_argument("--depth", type=int, default=4, help="the model's size dial (components.model)")
    parser.add_argument("--seq", type=int, default=512, help="sequence length (SFT rows, the longest pair)")
    parser.add_argument("--micro-batch", type=int, default=4, help="rows (SFT) or pairs per step")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1, help="threads of each rank (see pretrain_throughput)")
    parser.add_argument("--no-pack", dest="pack", action="store_false", help="SFT: one conversation per row")
    args = parser.parse_args()
    args.skip = max(1, args.skip)
    work = Path(tempfile.mkdtemp(prefix="posttrain-bench-"))
    try:
        began, load = time.monotonic(), os.getloadavg()[0]
        base, data, parameters = prepare(args, work)
        print(f"{os.cpu_count()} CPUs, load average {load:.1f} before", flush=True)
        results = {objective: compare(args, objective, base, data, work) for objective in args.objectives}
        print(f"\ndepth {args.depth} ({parameters / 1e6:.1f}M parameters), seq {args.seq}, micro-batch "
              f"{args.micro_batch}, vocab {args.vocab}, fp32, 1 rank, {args.threads} thread(s), SFT "
              f"{'packed' if args.pack else 'unpacked'}; steps {args.skip + 1}-{args.steps} of each run timed; load "
              f"average {load:.1f} before, {os.getloadavg()[0]:.1f} after; {time.monotonic() - began:.0f} s\n")
        print(table(args, results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
