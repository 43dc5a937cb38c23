"""SFT data: instruction data (Alpaca, OpenAI/ShareGPT messages, OpenAssistant trees) → deduplicated,
decontaminated, chat-templated and tokenized conversations in train and val, with the mask of the tokens the
assistant says, for the sft stage. Tokenized with the pipeline's tokenizer unless params name another."""
from __future__ import annotations

from components.sft_data import SftDataParams as Params
from components.sft_data import build_sft_data

SECTION = "sft_data"
GATES = {"examples-*.parquet": "sft_examples"}
__all__ = ["GATES", "Params", "SECTION", "run"]


def run(ctx, progress: bool = True) -> dict[str, float]:
    tokenizer = ctx.params.tokenizer or ctx.inputs["tokenizer"]
    manifest = build_sft_data(ctx.params, tokenizer, ctx.out_dir, ctx.report_dir, progress=progress)
    return {**{f"examples_{split}": n for split, n in manifest["examples"].items()},
            "train_tokens": manifest["tokens"]["train"],
            "train_assistant_tokens": manifest["assistant_tokens"]["train"],
            **{f"removed_{reason}": n for reason, n in sorted(manifest["removed"].items())},
            **{f"bad_records_{reason}": n for reason, n in sorted(manifest["bad_records"].items())},
            **{f"contaminated_{name}": s["dropped"] for name, s in manifest["decontamination"].items()}}
