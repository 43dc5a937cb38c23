"""From a DeepSpeed checkpoint to a Hugging Face model folder.

ZeRO shards the fp32 master weights across ranks (and, at stage 3, the module's own parameters);
DeepSpeed's `zero_to_fp32` reassembles them from the checkpoint files alone, in one process, without the
ranks or the devices that wrote them. So the export runs after the launch has ended, for any ZeRO stage and
any number of ranks, and the weights exported are the fp32 master copy even for a bf16 run.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
from transformers import LlamaForCausalLM

from components.model import export_hf
from components.train.engine import latest_step
from components.train.objectives import build_model, exported
from components.train.params import TrainConfig


def load_trained(cfg: TrainConfig) -> LlamaForCausalLM:
    """The model of the newest complete checkpoint in `cfg.ckpt_dir`, in fp32, on CPU, in eval mode."""
    step = latest_step(cfg.ckpt_dir)
    if step is None:
        raise FileNotFoundError(f"no complete checkpoint in {cfg.ckpt_dir} (no 'latest' marker): train first")
    state = _weights(cfg.ckpt_dir, step)
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a tied LM head is the embedding, saved once (under a prefix when the module holds several models)
    tied = {name for name in missing if name.endswith("lm_head.weight")} if model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise ValueError(f"checkpoint step-{step} in {cfg.ckpt_dir} does not fit the configured model: "
                         f"missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    model.tie_weights()
    return model.eval()


def _weights(ckpt_dir: Path, step: int) -> dict:
    """The fp32 weights of checkpoint step-N. ZeRO 1-3 keep an fp32 master copy sharded in the optimizer
    states, which `zero_to_fp32` reassembles; stage 0 shards nothing, and its module file holds the weights
    themselves (in bf16 for a bf16 run: the fp32 master copy is not written there)."""
    stage = json.loads((Path(ckpt_dir) / "ds_config.json").read_text())["zero_optimization"]["stage"]
    if stage:
        return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=f"step-{step}")
    # DeepSpeed pickles its checkpoints; `ckpt_dir` is always the stage's own state folder (.llm-lifecycle/<stage>/,
    # written by this run's ranks), never a stage output or anything `dvc pull` brings in.
    module = torch.load(Path(ckpt_dir) / f"step-{step}" / "mp_rank_00_model_states.pt", map_location="cpu",
                        weights_only=False)["module"]
    return {name: tensor.float() for name, tensor in module.items()}


# How an exported chat model samples unless told otherwise: servers (`transformers serve`, vLLM) read these, and
# without `do_sample` they decode greedily whatever temperature a request asks for.
CHAT_SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.9}


def export_checkpoint(cfg: TrainConfig, out_dir: Path, extra_card: str = "",
                      stop_token_ids: list[int] | None = None) -> LlamaForCausalLM:
    """Write the newest checkpoint as an HF folder (weights, config, tokenizer, chat template, card) into
    `out_dir`; returns the model it wrote, for checks against the reloaded folder. With `stop_token_ids` it is
    a chat model: they go into its generation config (it ends its turn with <|im_end|>, so generation must stop
    there too), with sampling on by default (CHAT_SAMPLING)."""
    tokenizer_dir = cfg.tokenizer_dir or cfg.init_from
    if tokenizer_dir is None:
        raise ValueError("exporting needs the tokenizer folder (TrainConfig.tokenizer_dir)")
    model = exported(cfg, load_trained(cfg))
    if stop_token_ids:
        model.generation_config.update(eos_token_id=stop_token_ids, **CHAT_SAMPLING)
    export_hf(model, tokenizer_dir, out_dir, extra_card)
    return model
