"""What a training run is given: the hyperparameters a person chooses (`LoopParams`, shared by every objective;
`TrainParams` adds pretraining's model size and steps) and the facts of one run that the pipeline fills in
(`TrainConfig`: objective, vocabulary, digests, folders).

No DeepSpeed import here: the pipeline validates and writes these without starting the training stack.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field

from components.model import ModelParams
from components.params import StrictModel

# Files rank 0 writes into ckpt_dir besides the checkpoints: a row per logged step, and the run's result.
METRICS = "metrics.jsonl"
RESULT = "result.json"


class LoopParams(StrictModel):
    """The training loop's settings, the same for every objective (pretraining, SFT, ...)."""

    micro_batch: int = Field(4, gt=0, description="sequences per rank per forward pass")
    grad_accum: int = Field(1, gt=0, description="forward/backward passes per optimizer step")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    warmup: int = Field(10, ge=0, description="linear warmup steps")
    schedule: Literal["wsd", "cosine"] = "wsd"
    decay_fraction: float = Field(0.2, ge=0, le=1, description="share of the steps the WSD decay takes; the "
                                  "anneal split (if any) is trained on during it")
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay of the matrices (not norms)")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO: 0 shards nothing (plain data parallelism, the "
                                            "cheapest on one rank), 1 shards optimizer states, 2 also gradients, "
                                            "3 also the weights (infra/deepspeed/zero<N>.json holds the rest)")
    bf16: bool = Field(False, description="bf16 compute with fp32 master weights; on GPUs that have it (A100+)")
    grad_clip: float = Field(1.0, ge=0, description="global gradient-norm clip; 0 disables")
    activation_checkpointing: bool = Field(False, description="recompute activations in the backward pass: "
                                           "~30% more compute for a fraction of the activation memory")
    compile: bool = Field(False, description="torch.compile the model (GPU: faster after a minute of compiling)")
    compile_mode: Literal["blocks", "model"] = Field(
        "blocks", description="with compile: each decoder block compiled (the mask stays outside the graph, so SDPA "
                              "may pick flash attention), or the whole model in one graph (for comparison); ZeRO-3 "
                              "always uses DeepSpeed's whole-model compile")
    ckpt_every: int = Field(0, ge=0, description="save every N steps (and always at the end); 0: only the end")
    keep_last: int = Field(2, gt=0, description="checkpoints kept on disk; older ones are deleted")
    seed: int = 0
    log_every: int = Field(1, gt=0)
    val_every: int = Field(0, ge=0, description="validate every N steps (and always at the end when "
                           "val_batches > 0); 0: only at the end")
    val_batches: int = Field(0, ge=0, description="validation batches (of micro_batch sequences) scored")
    step_pause_s: float = Field(0.0, ge=0, description="sleep after every step: slows a demo or test run so it "
                                "can be interrupted at a known point; no effect on the results")
    step_timeout_s: float = Field(300, ge=0, description="step watchdog: a rank that sees no step finish within "
                                  "max(this, 10x the slowest step) exits with an error, so a job whose node died "
                                  "stops instead of hanging in a collective (the first step, validation and "
                                  "checkpoint saves get the process-group time-out, DEEPSPEED_TIMEOUT); 0 disables")
    peak_flops: float | None = Field(None, gt=0, description="peak FLOP/s of one device for MFU; default: the "
                                     "datasheet table (H100, H200, A100), or a matmul measured on CPU")


class TrainParams(LoopParams):
    """Pretraining: the loop's settings, the model's size and the length of the run."""

    model: ModelParams = ModelParams()
    steps: int = Field(300, gt=0, description="optimizer steps in the whole run (resumes included)")


class TrainConfig(TrainParams):
    """One run: the hyperparameters plus what the pipeline knows about its inputs and where it writes."""

    objective: Literal["causal_lm", "sft", "reward", "dpo", "ppo"] = Field(
        "causal_lm", description="what is learned: a module of components/train/objectives")
    options: dict = Field(default_factory=dict, description="the objective's own settings (its `Options` model "
                          "validates them), e.g. DPO's beta")
    init_from: Path | None = Field(None, description="a Hugging Face model folder to start from (fine-tuning); "
                                   "None: a fresh model of the size `model` gives")
    pack: bool = Field(True, description="sft: several conversations per row, attention kept inside each")
    vocab_size: int = Field(..., gt=0, description="the model's vocabulary; the token shards must match it")
    tokenizer_digest: str = Field(..., description="digest of the tokenizer the shards must have been made with")
    tokenizer_dir: Path | None = Field(None, description="when given, validation also reports bits per byte")
    bos_id: int = 0
    eos_id: int = 1
    pad_id: int = 2
    token_dir: Path = Field(..., description="the objective's data: token shards (causal_lm), tokenized "
                            "conversations (sft)")
    ckpt_dir: Path
    deepspeed: dict = Field(default_factory=dict, description="a DeepSpeed config template (infra/deepspeed/): "
                            "its 'auto' values are filled from these settings")
    on_metrics: Callable[[dict], None] | None = Field(None, exclude=True, description="called on rank 0 with "
                                                      "each logged row (training and validation metrics)")
