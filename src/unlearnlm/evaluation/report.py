"""``unlearnlm report RUN...``: one comparison over several evaluated runs.

A RUN is an evaluation folder (``summary.json``) or an unlearning run folder, whose
``eval/summary.json`` (a final ``unlearnlm evaluate RUN``) or last ``eval/epoch_K`` gives its
numbers and whose ``eval/epoch_K`` folders give its per-epoch trajectory. Writes into the
output folder:

    report.md / report.csv   the comparison table (judges named in their own columns)
    mu_fe.png                Model Utility against Forget Efficacy, one point per run
    trajectories.png         MU and FE per epoch, one line per run (when any run has epochs)
    attacks.png, report_attacks.csv   the method x attack recovery (when runs have RUN/attacks/summary.json)
    report.html              a self-contained page showing all of it
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import yaml

from .. import tables
from ..errors import UserError
from ..io import atomic_write_text
from ..tables import format_cell
from .evaluate import EVAL_SUMMARY, flat_numbers
from .metrics import AGGREGATES as ALL_AGGREGATES
from .metrics import REGISTRY

logger = logging.getLogger(__name__)

# The registry's choice of columns: aggregates, then the forget set's metrics.
LEADING = ("MU", "FE")  # the paper's two first
AGGREGATES = LEADING + tuple(a.name for a in ALL_AGGREGATES if a.in_report and a.name not in LEADING)
FORGET_METRICS = tuple(m.name for m in REGISTRY if m.in_report)


@dataclass
class RunResult:
    name: str
    folder: Path
    method: str
    summary: dict  # the numbers shown in the table
    trajectory: list[dict] = field(default_factory=list)  # epoch summaries, in epoch order

    @property
    def judges(self) -> tuple[str, str]:
        judges = self.summary.get("judges", {})
        return judges.get("embedder") or "none", judges.get("nli") or "none"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def _epoch_key(folder: Path) -> float:
    try:
        return float(folder.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return float("inf")


def _method_of(folder: Path) -> str:
    for config in (folder / "config.yaml", folder.parent / "config.yaml"):
        if config.exists():
            saved = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            if isinstance(saved, dict) and saved.get("method"):
                return str(saved["method"])
    return ""


def load_run(path: str | Path) -> RunResult:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"report: {path} is not a folder")
    eval_folder = folder if (folder / EVAL_SUMMARY).exists() else folder / "eval"
    epochs = sorted((p for p in eval_folder.glob("epoch_*") if (p / EVAL_SUMMARY).exists()), key=_epoch_key)
    trajectory = [_read_json(p / EVAL_SUMMARY) for p in epochs]
    if (eval_folder / EVAL_SUMMARY).exists():
        summary = _read_json(eval_folder / EVAL_SUMMARY)
    elif trajectory:
        summary = trajectory[-1]
    else:
        raise UserError(f"report: {path} holds no evaluation (no summary.json); run `unlearnlm evaluate {path}` first")
    name = folder.name if folder.name not in ("eval", "") else folder.resolve().parent.name
    return RunResult(name, folder, _method_of(folder), summary, trajectory)


def table_rows(runs: Sequence[RunResult]) -> tuple[list[str], list[dict]]:
    """Columns and rows of the comparison: aggregates, forget-set metrics, then the judges."""
    rows = []
    for run in runs:
        numbers = flat_numbers(run.summary)
        embedder, nli = run.judges
        row = {"run": run.name, "method": run.method, "epoch": run.summary.get("epoch", "")}
        row.update({key: numbers.get(key) for key in AGGREGATES})
        row.update({f"forget/{m}": numbers.get(f"forget/{m}") for m in FORGET_METRICS})
        row.update({"embedder": embedder, "nli": nli})
        row["skipped"] = "; ".join(run.summary.get("skipped", []))
        rows.append(row)
    columns = list(rows[0]) if rows else []
    # A column nobody has (e.g. FQ without retain_eval) is left out of the table.
    columns = [c for c in columns if c in ("run", "embedder", "nli") or any(r[c] not in (None, "") for r in rows)]
    return columns, rows


def privleak_note(runs: Sequence[RunResult]) -> str | None:
    """Runs whose privleak assumed A_R = 0.5 instead of a retain model's: said out loud."""
    fallback = [run.name for run in runs if str(run.summary.get("privleak_reference", "")).startswith("A_R = 0.5")]
    if not fallback:
        return None
    return f"privleak of {', '.join(fallback)}: no retain model's AUC, A_R = 0.5 assumed."


def judges_note(runs: Sequence[RunResult]) -> Optional[str]:
    combos = sorted({run.judges for run in runs})
    if len(combos) <= 1:
        return None
    listed = "; ".join(f"embedder {e}, nli {n}" for e, n in combos)
    return (f"These runs were scored by different judges ({listed}): Cosine, Entailment, MU and FE "
            "compare only between rows with the same embedder and nli columns.")


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    return tables.markdown_table([c for c in columns if c != "skipped"], rows)


def csv_text(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({c: ("" if row[c] is None else row[c]) for c in columns} for row in rows)
    return buffer.getvalue()


# ---- plots -------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    _pyplot().close(figure)
    return buffer.getvalue()


def plot_mu_fe(runs: Sequence[RunResult]) -> bytes:
    """One point per run: Forget Efficacy (x) against Model Utility (y); marker = judges."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    markers = {combo: m for combo, m in zip(sorted({r.judges for r in runs}), "os^Dv<>p*h")}
    labelled = set()
    for run in runs:
        mu, fe = run.summary.get("MU"), run.summary.get("FE")
        if mu is None or fe is None:
            continue
        label = None if run.judges in labelled else "judges: {} / {}".format(*run.judges)
        labelled.add(run.judges)
        axis.scatter([fe], [mu], marker=markers[run.judges], s=50, label=label)
        axis.annotate(run.name, (fe, mu), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if len(markers) > 1:  # never mix judges without saying so
        axis.legend(fontsize="x-small", loc="lower left")
    axis.set_xlabel("Forget Efficacy (higher: forgot more)")
    axis.set_ylabel("Model Utility (higher: kept more)")
    axis.set_xlim(-0.02, 1.02)
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.set_title("MU vs FE")
    figure.tight_layout()
    return _png(figure)


def plot_trajectories(runs: Sequence[RunResult]) -> Optional[bytes]:
    """MU and FE against the epoch, one line per run with per-epoch evaluations."""
    with_epochs = [r for r in runs if r.trajectory]
    if not with_epochs:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for run in with_epochs:
        for axis, key in zip(axes, ("MU", "FE")):
            points = [(s.get("epoch"), s.get(key)) for s in run.trajectory]
            points = [(e, v) for e, v in points if e is not None and v is not None]
            if points:
                axis.plot(*zip(*points), marker="o", label=run.name)
    from matplotlib.ticker import MaxNLocator

    for axis, title in zip(axes, ("Model Utility", "Forget Efficacy")):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    return _png(figure)


# ---- the page ----------------------------------------------------------------------------------


def html_page(columns: list[str], rows: list[dict], note: Optional[str], images: dict[str, bytes]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns if c != "skipped")
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(row[c]))}</td>" for c in columns if c != "skipped") + "</tr>"
        for row in rows
    )
    skipped = "".join(
        f"<li><b>{html.escape(row['run'])}</b>: {html.escape(row['skipped'])}</li>"
        for row in rows if row.get("skipped")
    )
    figures = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, data in images.items()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>unlearnlm report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
.note {{ background: #fff4d6; padding: 0.6em; border-left: 4px solid #e0a800; }}
figure {{ display: inline-block; margin: 1em 1em 0 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Unlearning report</h1>
<p>MU = Model Utility (harmonic mean over the utility sets), FE = Forget Efficacy, TOFU_MU = TOFU's Model
Utility, FQ = Forget Quality (KS-test p-value against a retain model), privleak = privacy leakage of Min-K%
against a retain model (ideal 0, -100 = memorised), AUC_min_k = Min-K% membership-inference AUC of forget vs
holdout rows (0.5 = indistinguishable); forget/* = the forget set's metrics (extraction_strength and
exact_memorisation: higher = more of the forget answers reproduced).</p>
{f'<p class="note">{html.escape(note)}</p>' if note else ''}
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{f'<h2>Skipped metrics</h2><ul>{skipped}</ul>' if skipped else ''}
<h2>Plots</h2>{figures}
</body></html>
"""


def write_report(run_paths: Sequence[str], output: str | Path = "report") -> Path:
    """Write the comparison of ``run_paths`` into ``output``; returns the HTML page's path."""
    runs = [load_run(p) for p in run_paths]
    names = [r.name for r in runs]
    for index, run in enumerate(runs):  # two folders with one name: tell them apart
        if names.count(run.name) > 1:
            run.name = f"{run.name} ({run.folder.parent.name or index})"
    output = Path(output)
    columns, rows = table_rows(runs)
    note = " ".join(n for n in (judges_note(runs), privleak_note(runs)) if n) or None
    markdown = markdown_table(columns, rows) + (f"\n> {note}\n" if note else "")
    atomic_write_text(output / "report.md", markdown)
    atomic_write_text(output / "report.csv", csv_text(columns, rows))
    images = {"Model Utility vs Forget Efficacy": plot_mu_fe(runs)}
    trajectories = plot_trajectories(runs)
    if trajectories is not None:
        images["Per-epoch trajectories"] = trajectories
    for title, data in images.items():
        _write_bytes(output / ("mu_fe.png" if title.startswith("Model") else "trajectories.png"), data)
    from .attack_report import write_attack_section  # runs attacked by `unlearnlm attack`

    attack_section, attack_plot = write_attack_section(runs, output)
    if attack_section:
        markdown += "\n" + attack_section
        atomic_write_text(output / "report.md", markdown)
        images["Recovery under attack (method x attack)"] = attack_plot
    page = output / "report.html"
    atomic_write_text(page, html_page(columns, rows, note, images))
    logger.info(markdown.rstrip("\n"))
    return page


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
