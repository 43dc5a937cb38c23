"""Preferences: human preference pairs (HH-RLHF, the DPO prompt/chosen/rejected format, OpenAssistant ranked
siblings) and, when enabled, pairs the served SFT policy samples and an LLM judge labels → deduplicated,
decontaminated, chat-templated and tokenized pairs in train and val (split by prompt), each side masked to its
last reply, for the reward and dpo stages. Tokenized with the pipeline's tokenizer unless params name another.

The simulation talks to endpoints, not to data/sft: DVC cannot make a dependency conditional on a parameter.
A served local model folder is fingerprinted instead: its digest is part of every cached request, so a
retrained model is asked again, and the manifest names the models.
"""
from __future__ import annotations

from pathlib import Path

from components.preferences import CachedChat, build_preferences
from components.preferences import PreferencesParams as Params

SECTION = "preferences"
GATES = {"pairs-*.parquet": "preference_pairs"}
__all__ = ["GATES", "Params", "SECTION", "run"]


def run(ctx, progress: bool = True) -> dict[str, float]:
    tokenizer = ctx.params.tokenizer or ctx.inputs["tokenizer"]
    simulation = ctx.params.simulation
    chat = CachedChat(ctx.state_dir / "requests", _revisions(simulation)) if simulation.enabled else None
    manifest = build_preferences(ctx.params, tokenizer, ctx.out_dir, ctx.report_dir, chat, progress=progress)
    metrics = {**{f"pairs_{split}": n for split, n in manifest["pairs"].items()},
               **{f"{name}_pairs": counts["train"] + counts["val"] for name, counts in manifest["by_source"].items()},
               **{f"removed_{reason}": n for reason, n in sorted(manifest["removed"].items())},
               **{f"bad_records_{reason}": n for reason, n in sorted(manifest["bad_records"].items())},
               **{f"contaminated_{name}": s["dropped"] for name, s in manifest["decontamination"].items()}}
    if chat is not None:
        agreement = manifest["simulation"]["judge_agreement"]
        metrics |= {f"judge_{key}": value for key, value in agreement.items() if value is not None}
        metrics |= {f"requests_{what}": chat.counts[what] for what in ("made", "cached")}
    return metrics


def _revisions(simulation) -> dict[str, str]:
    """Model id → digest of the folder, for the policy and judge models that are local folders."""
    from tasks.training import folder_digest

    models = {endpoint.model for endpoint in (simulation.policy, simulation.judge)}
    return {model: folder_digest(Path(model)) for model in models if Path(model).is_dir()}
