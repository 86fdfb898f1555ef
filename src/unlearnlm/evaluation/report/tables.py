"""The report's tables: which columns (the registry's choice), each run's row with its
intervals, the markdown table, the notes beneath it, and open-unlearning's own numbers."""

from __future__ import annotations

from collections.abc import Sequence

from ... import tables
from ...tables import format_cell
from .. import statistics as S
from ..metrics import AGGREGATES as ALL_AGGREGATES
from ..metrics import REGISTRY
from ..runs import flat_numbers
from .load import RunResult

# The registry's choice of columns: aggregates, then the forget set's metrics.
LEADING = ("MU", "FE")  # the paper's two first


AGGREGATES = LEADING + tuple(a.name for a in ALL_AGGREGATES if a.in_report and a.name not in LEADING)


FORGET_METRICS = tuple(m.name for m in REGISTRY if m.in_report)


TITLES = {a.name: a.title for a in ALL_AGGREGATES}


BETTER = {a.name: a.better for a in ALL_AGGREGATES}


def better_direction(key: str) -> str:
    """'up' when a higher number is better, 'down' when lower is (on a forget set a lower score
    means more forgotten, except Token entropy, which measures fluency), '0' or '0.5' when the
    best is that value (privleak, the MIA AUCs)."""
    if key.startswith("forget/") and not key.endswith("token_entropy"):
        return "down"
    return {"higher": "up", "lower": "down"}.get(BETTER.get(key, "higher"), BETTER.get(key))


def arrow(key: str) -> str:
    return {"up": "\u2191", "down": "\u2193"}.get(better_direction(key), "\u2192" + better_direction(key))


def _with_interval(value, interval) -> str:
    if not isinstance(value, float):
        return format_cell(value)
    return S.format_with_interval(value, interval)


def table_rows(runs: Sequence[RunResult]) -> tuple[list[str], list[dict]]:
    """Columns and rows of the comparison: aggregates, forget-set metrics, then the judges.

    A number's interval is in the row as KEY_low / KEY_high (CSV columns, not shown columns)."""
    rows = []
    for run in runs:
        numbers = flat_numbers(run.summary)
        embedder, nli = run.judges
        row = {"run": run.name, "method": run.method, "epoch": run.summary.get("epoch", "")}
        seeds = run.summary.get("seeds")
        row["seeds"] = len(seeds["seeds"]) if seeds else ""
        if seeds:  # mean over seeds: their standard deviation beside the headline numbers
            for key in ("MU", "FE"):
                if key in seeds["spread"]:
                    row[f"{key}_sd"] = seeds["spread"][key]["sd"]
        for key in (*AGGREGATES, *(f"forget/{m}" for m in FORGET_METRICS)):
            row[key] = numbers.get(key)
            for bound in ("low", "high"):
                if f"{key}_{bound}" in numbers:
                    row[f"{key}_{bound}"] = numbers[f"{key}_{bound}"]
        row.update({"embedder": embedder, "nli": nli})
        row["skipped"] = "; ".join(run.summary.get("skipped", []))
        rows.append(row)
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    for row in rows:
        for column in columns:
            row.setdefault(column, None)
    # A column nobody has (e.g. FQ without retain_eval) is left out of the table.
    columns = [c for c in columns if c in ("run", "embedder", "nli") or any(r[c] not in (None, "") for r in rows)]
    return columns, rows


def shown_columns(columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c != "skipped" and not c.endswith(("_low", "_high", "_sd"))]


def _cell_text(row: dict, column: str) -> str:
    low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
    text = _with_interval(row[column], [low, high] if low is not None and high is not None else None)
    if row.get(f"{column}_sd") is not None:  # mean over seeds
        text = text.replace(" [", f" \u00b1 {row[f'{column}_sd']:.4f} [", 1)
    return text


def heading(column: str) -> str:
    return f"{column} {arrow(column)}" if column in AGGREGATES or column.startswith("forget/") else column


def privleak_note(runs: Sequence[RunResult]) -> str | None:
    """Runs whose privleak assumed A_R = 0.5 instead of a retain model's: said out loud."""
    fallback = [run.name for run in runs if str(run.summary.get("privleak_reference", "")).startswith("A_R = 0.5")]
    if not fallback:
        return None
    return f"privleak of {', '.join(fallback)}: no retain model's AUC, A_R = 0.5 assumed."


def judges_note(runs: Sequence[RunResult]) -> str | None:
    combos = sorted({run.judges for run in runs})
    if len(combos) <= 1:
        return None
    listed = "; ".join(f"embedder {e}, nli {n}" for e, n in combos)
    return (f"These runs were scored by different judges ({listed}): Cosine, Entailment, MU and FE "
            "compare only between rows with the same embedder and nli columns.")


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    shown = shown_columns(columns)
    lines = ["| " + " | ".join(heading(c) for c in shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_cell_text(row, c) for c in shown) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def open_unlearning_table(runs: Sequence[RunResult]) -> tuple[list[str], list[dict]]:
    """Every run's open-unlearning TOFU numbers (its names), open-unlearning's own results and
    unlearnlm's suite=open-unlearning evaluations alike; no columns when no run has them."""
    from ..open_unlearning import SUMMARY_NAMES

    having = [r for r in runs if r.summary.get("open_unlearning")]
    names = [n for n in SUMMARY_NAMES if any(n in r.summary["open_unlearning"] for r in having)]
    extra = sorted({n for r in having for n in r.summary["open_unlearning"]} - set(names))
    rows = [{"run": r.name, "computed by": "open-unlearning" if r.external else "unlearnlm",
             **{n: r.summary["open_unlearning"].get(n) for n in (*names, *extra)}} for r in having]
    return (["run", "computed by", *names, *extra] if rows else []), rows


def open_unlearning_markdown(columns: list[str], rows: list[dict]) -> str:
    return "## open-unlearning's TOFU numbers (its names and definitions)\n\n" + tables.markdown_table(columns, rows)
