"""SFT data: instruction data (Alpaca, OpenAI/ShareGPT messages, OpenAssistant trees) → deduplicated,
decontaminated, chat-templated and tokenized conversations in train and val, with the mask of the tokens the
assistant says, for the sft stage. Tokenized with the pipeline's tokenizer unless params name another.

With `synthetic.enabled`, a teacher model writes more instructions first (Alpaca's self-instruct), read as the
`self_instruct` source. Like the preferences simulation it talks to an endpoint, not to a DVC input; its every
response is cached under `synthetic.cache_dir`, so a rerun pays nothing."""
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
            **{f"contaminated_{name}": s["dropped"] for name, s in manifest["decontamination"].items()},
            **synthetic_metrics(manifest.get("synthetic"))}


def synthetic_metrics(synthetic: dict | None) -> dict[str, float]:
    """The teacher's requests, tokens and cost (when priced), the tasks accepted and those each filter dropped."""
    if synthetic is None:
        return {}
    metrics = {**{f"synthetic_requests_{what}": n for what, n in synthetic["requests"].items()},
               **{f"synthetic_{kind}_tokens": n for kind, n in synthetic["tokens"].items()},
               **{f"synthetic_{kind}_tokens_paid": n for kind, n in synthetic["tokens_paid"].items()},
               "synthetic_accepted": synthetic["tasks"]["accepted"],
               **{f"synthetic_dropped_{reason}": n for reason, n in synthetic["dropped"].items()}}
    if synthetic["cost_usd"] is not None:
        metrics |= {"synthetic_cost_usd": synthetic["cost_usd"], "synthetic_cost_usd_paid": synthetic["cost_usd_paid"]}
    return metrics
