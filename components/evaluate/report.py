"""The report card: every score of every model in one table (HELM-style: one column per model, one row per
measure), each with its 95% interval and the task's chance line; a long CSV with every field (digests included),
and three plots: scores per model with intervals, win rate vs response length, bits per byte per text set."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

KEY = ["measure", "task", "formulation", "shots", "subset"]


def report_card(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    """Write report.md, report.csv and the plots into `out_dir`; return their paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    paths = {"csv": out_dir / "report.csv", "markdown": out_dir / "report.md"}
    table.to_csv(paths["csv"], index=False)
    paths["markdown"].write_text(markdown(table), encoding="utf-8")
    return paths | plots(table, out_dir)


def markdown(table: pd.DataFrame) -> str:
    models = list(dict.fromkeys(table["model"]))
    lines = ["| measure | task | formulation | shots | subset | chance | " + " | ".join(models) + " | prompt / items |",
             "|" + "---|" * (len(models) + 7)]
    for key, group in table.groupby(KEY, sort=False, dropna=False):
        by_model = {row["model"]: row for _, row in group.iterrows()}
        first = group.iloc[0]
        cells = [_cell(by_model[m]) if m in by_model else "" for m in models]
        label = [_text(part) for part in key]
        digests = "/".join(d for d in (first["prompt_digest"], first["items_digest"]) if isinstance(d, str) and d)
        lines.append("| " + " | ".join([*label, _number(first["chance"]), *cells, digests]) + " |")
    notes = table[table["note"].astype(str).str.len() > 0][["model", "measure", "task", "note"]].drop_duplicates()
    lines += ["", "Intervals are 95%: Wilson for accuracies and overlap, bootstrap over items, documents or "
              "instructions for bits per byte, perplexity and win rate; the LC win rate has none (see its note). "
              "Digests: prompt format and shot count / the scored items' content.", ""]
    lines += [f"- {row.model}, {row.measure} {row.task}: {row.note}" for row in notes.itertuples()]
    return "\n".join(lines) + "\n"


def _cell(row) -> str:
    value = _number(row["value"])
    if _is_number(row["ci_low"]) and _is_number(row["ci_high"]):
        return f"{value} [{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def _number(value) -> str:
    if not _is_number(value):
        return ""
    return f"{value:.3g}" if abs(value) < 1e-3 and value else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _text(value) -> str:
    if isinstance(value, float):  # shots: a float column once some rows have none
        return "" if math.isnan(value) else str(int(value)) if value.is_integer() else str(value)
    return "" if value is None else str(value)


def plots(table: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    accuracy = table[table["measure"].isin(["acc", "acc_norm"]) & (table["subset"] == "all")]
    if len(accuracy):
        paths["scores_plot"] = _errorbars(plt, accuracy, out_dir / "scores.png", "accuracy (95% interval)",
                                          lambda r: f"{r.task} {r.formulation} {r.measure} {r.shots}-shot")
    text = table[table["measure"] == "bpb"]
    if len(text):
        paths["bpb_plot"] = _errorbars(plt, text, out_dir / "bpb.png", "bits per byte (95% interval)", lambda r: r.task)
    judged = table[table["measure"].isin(["win_rate", "avg_length"])]
    if (judged["measure"] == "win_rate").any():  # a judge with no usable verdicts leaves only the lengths
        wide = judged.pivot_table(index="model", columns="measure", values=["value", "ci_low", "ci_high"],
                                  aggfunc="first")
        figure, axis = plt.subplots(figsize=(6, 4))
        for model, row in wide.iterrows():
            rate = row[("value", "win_rate")]
            axis.errorbar(row[("value", "avg_length")], rate, fmt="o", capsize=3, label=model,
                          yerr=[[rate - row[("ci_low", "win_rate")]], [row[("ci_high", "win_rate")] - rate]])
        axis.axhline(50, color="grey", linestyle=":", label="tie with the reference")
        axis.set(xlabel="mean answer length (characters)", ylabel="win rate % (95% interval)")
        axis.legend(fontsize=7)
        paths["winrate_plot"] = _save(figure, out_dir / "winrate_vs_length.png")
    return paths


def _errorbars(plt, rows: pd.DataFrame, path: Path, ylabel: str, label) -> Path:
    labels = list(dict.fromkeys(label(r) for r in rows.itertuples()))
    models = list(dict.fromkeys(rows["model"]))
    figure, axis = plt.subplots(figsize=(max(6, 0.5 * len(labels) + 2), 4))
    for offset, model in enumerate(models):
        for number, r in enumerate(rows[rows["model"] == model].itertuples()):
            x = labels.index(label(r)) + (offset - (len(models) - 1) / 2) * 0.8 / max(len(models), 1)
            low = r.value - r.ci_low if _is_number(r.ci_low) else 0
            high = r.ci_high - r.value if _is_number(r.ci_high) else 0
            axis.errorbar(x, r.value, yerr=[[low], [high]], fmt="o", capsize=3, color=f"C{offset}",
                          label=model if number == 0 else None)
            if _is_number(r.chance):
                axis.hlines(r.chance, x - 0.2, x + 0.2, color="grey", linestyle=":")
    axis.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel(ylabel + "; dotted: chance" if "accuracy" in ylabel else ylabel)
    axis.legend(fontsize=7)
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
