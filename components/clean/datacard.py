"""The data card of a cleaning run: a markdown page and the plots people look at instead of tables."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

STEP_ORDER = ["url", "extract", "language", "gopher_repetition", "gopher_quality", "c4", "c4_badwords", "fineweb",
              "pii", "dedup", "quality"]


def write_datacard(summary: dict, docs: pd.DataFrame, out: Path) -> list[str]:
    """Funnel, length and quality histograms, language and domain shares; returns the files written.

    `docs`: one row per kept document with chars, quality, language and domain."""
    out.mkdir(parents=True, exist_ok=True)
    funnel = _funnel(summary["steps"])
    _plot_funnel(funnel, out / "funnel.png")
    _histogram(docs["chars"], "characters per document (log scale)", out / "lengths.png", log=True)
    _histogram(docs["quality"], "quality score of kept documents (line: the cutoff)", out / "quality.png",
               marker=summary["quality_cutoff"])
    _shares(docs["language"], "language", out / "languages.png")
    _shares(docs["domain"], "domain", out / "domains.png")
    (out / "datacard.md").write_text(_markdown(summary, funnel, docs))
    return ["datacard.md", "funnel.png", "lengths.png", "quality.png", "languages.png", "domains.png"]


def _funnel(steps: dict) -> pd.DataFrame:
    order = [s for s in STEP_ORDER if s in steps] + [s for s in steps if s not in STEP_ORDER]
    rows = [{"step": "input", "documents": steps[order[0]]["docs_in"], "chars": None}]
    for name in order:
        s = steps[name]
        rows.append({"step": name, "documents": s["docs_out"], "chars": s["chars_out"] or None,
                     "removed": ", ".join(f"{rule} {n}" for rule, n in s["removed"].items())})
    return pd.DataFrame(rows)


def _plot_funnel(funnel: pd.DataFrame, path: Path) -> None:
    fig, (docs_ax, chars_ax) = plt.subplots(1, 2, figsize=(11, 4))
    docs_ax.barh(funnel["step"], funnel["documents"], color="#4477aa")
    docs_ax.set_title("documents remaining after each step")
    with_chars = funnel.dropna(subset=["chars"])
    chars_ax.barh(with_chars["step"], with_chars["chars"], color="#ee6677")
    chars_ax.set_title("characters of text remaining")
    for ax in (docs_ax, chars_ax):
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _histogram(values: pd.Series, title: str, path: Path, log: bool = False, marker: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    values = values.dropna()
    if log and len(values):
        ax.set_xscale("log")
        values = values.clip(lower=1)
        bins = list(pd.Series([1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7]))
    else:
        bins = 30
    ax.hist(values, bins=bins, color="#228833")
    if marker is not None:
        ax.axvline(marker, color="#aa3377", linestyle="--")
    ax.set_title(title)
    ax.set_ylabel("documents")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _shares(values: pd.Series, title: str, path: Path) -> None:
    counts = values.fillna("unknown").value_counts()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(counts.index.astype(str), counts.to_numpy() / max(counts.sum(), 1), color="#ccbb44")
    ax.set_title(f"share of documents by {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(summary: dict, funnel: pd.DataFrame, docs: pd.DataFrame) -> str:
    model = summary.get("quality_model", {})
    lines = [
        "# Data card: clean", "",
        f"{summary['documents']} documents kept from {funnel['documents'].iloc[0]} crawl records "
        f"({int(docs['chars'].sum()):,} characters).", "",
        "## Funnel", "", "![funnel](funnel.png)", "",
        "| step | documents after | characters after | removed (rule count) |", "|---|---|---|---|",
        *[f"| {r.step} | {r.documents} | {'' if pd.isna(r.chars) else f'{int(r.chars):,}'} | "
          f"{'' if pd.isna(r.removed) else r.removed} |" for r in funnel.fillna({"removed": ""}).itertuples()],
        "", "## Quality classifier", "",
        f"Held-out accuracy {model.get('holdout_accuracy', float('nan')):.3f} (AUC {model.get('holdout_auc', float('nan')):.3f}) on {model.get('n_holdout', 0)} documents "
        f"(trained on {model.get('n_pos', 0)} curated positives, {model.get('n_neg', 0)} crawl negatives); "
        f"cutoff {summary['quality_cutoff']:.3f}.", "", "![quality](quality.png)", "",
        "## Lengths, languages, domains", "", "![lengths](lengths.png) ![languages](languages.png) "
        "![domains](domains.png)", "",
        "Removed documents, with the step and rule that removed each, are in `removed/` beside the output.",
    ]
    return "\n".join(lines) + "\n"
