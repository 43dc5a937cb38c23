"""A Hugging Face model folder: weights (safetensors), config, tokenizer with its chat template, model card.

`AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)` load it with no
code from this project, which is what publishing to the Hub or serving with vLLM needs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers import PreTrainedModel

from components.model.config import model_params
from components.model.flops import describe
from components.model.load import load_pretrained
from components.tokenizer.train import CHAT_TEMPLATE, DIGESTED_FILES

# No manifest.json: it describes the tokenizer stage's run, not the model.
TOKENIZER_FILES = DIGESTED_FILES


def export_hf(model: PreTrainedModel, tokenizer_dir: Path, out_dir: Path, extra_card: str = "") -> Path:
    """Write the model folder into `out_dir` and return it. `extra_card` (Markdown) is added to the card."""
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    _check_tokenizer(model, tokenizer_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy2(tokenizer_dir / name, out_dir / name)
    if not (out_dir / "chat_template.jinja").exists():  # a folder from before the template was saved
        (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (out_dir / "README.md").write_text(model_card(model, extra_card), encoding="utf-8")
    return out_dir


def _check_tokenizer(model: PreTrainedModel, tokenizer_dir: Path) -> None:
    """Fail before writing when the tokenizer is not the one the model was built for: the ids must agree."""
    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {token["content"]: token["id"] for token in vocab.get("added_tokens", [])}
    ids |= vocab["model"]["vocab"]
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    for role in ("bos", "eos", "pad"):
        token, expected = config.get(f"{role}_token"), getattr(model.config, f"{role}_token_id")
        if token is not None and ids.get(token) != expected:
            raise ValueError(f"{role} token {token!r} has id {ids.get(token)} in {tokenizer_dir}, "
                             f"the model expects {expected}")
    if max(ids.values()) >= model.config.vocab_size:
        raise ValueError(f"tokenizer ids reach {max(ids.values())}, the model's vocabulary is "
                         f"{model.config.vocab_size}")


def model_card(model: PreTrainedModel, extra_card: str = "") -> str:
    config = model.config
    params = model_params(config)
    header = "\n".join(["---", "license: apache-2.0", "library_name: transformers",
                        "pipeline_tag: text-generation", "tags: [llm-lifecycle, llama, pretraining]", "---"])
    body = ("# llm-lifecycle model\n\nA Llama-architecture decoder (RMSNorm, RoPE, SwiGLU, no biases) trained "
            "with llm-lifecycle. Chat turns use ChatML (`<|im_start|>` / `<|im_end|>`, "
            "the template is in `chat_template.jinja`).\n\n## Architecture\n\n"
            f"{describe(params, config.vocab_size)}\n")
    return "\n\n".join(part for part in (header, body, extra_card.strip()) if part) + "\n"


def reload_difference(model: PreTrainedModel, folder: Path, input_ids) -> float:
    """The largest absolute logit difference between `model` and the folder loaded back by transformers
    alone (`AutoModelForCausalLM`), on `input_ids`: 0 up to float noise when the export is faithful."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = load_pretrained(AutoModelForCausalLM, folder).eval()
    with torch.no_grad():
        return (model(input_ids=input_ids).logits - reloaded(input_ids=input_ids).logits).abs().max().item()
