"""``unlearnlm report RUN...``: one comparison over several evaluated runs.

A RUN is an evaluation folder (``summary.json``) or an unlearning run folder, whose
``eval/summary.json`` (a final ``unlearnlm evaluate RUN``) or last ``eval/epoch_K`` gives its
numbers and whose ``eval/epoch_K`` folders give its per-epoch trajectory. A RUN may also be
open-unlearning's own TOFU results (its TOFU_SUMMARY.json or TOFU_EVAL.json, or a folder holding
one): those numbers sit beside the open-unlearning numbers of runs evaluated with
``suite=open-unlearning`` in a table of their own (report_open_unlearning.csv). Every number shows
its bootstrap interval when the evaluation holds one; with a baseline (``--baseline target``)
every run is compared with it on the same resampled rows. Writes into the output folder:

    report.md / report.csv   the comparison table (intervals; judges named in their own columns)
    comparison.csv           each run minus the baseline: difference, interval, distinguishable
    mu_fe.png                Model Utility against Forget Efficacy, one point per run, interval bars
    metrics.png              every headline number per run, with its interval
    trajectories.png         MU and FE per epoch, one line per run, interval bands (when any run has epochs)
    attacks.png, report_attacks.csv   the method x attack recovery (when runs have RUN/attacks/summary.json)
    report.html              a self-contained page showing all of it, and answers side by side

The page is made of separate sections (``section_*`` functions), each an HTML fragment.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ... import tables
from ...config import BootstrapConfig
from ...errors import UserError
from ...figures import png_bytes
from ...figures import pyplot as _pyplot
from ...io import atomic_write_text, read_yaml
from ...tables import csv_text, format_cell
from .. import statistics as S
from ..evaluate import METRIC_TITLES, folder_scoring
from ..metrics import AGGREGATES as ALL_AGGREGATES
from ..metrics import METRICS, REGISTRY
from ..runs import EVAL_SUMMARY, RECORDS_DIR, flat_numbers, interval_values, load_summary, read_set_rows

logger = logging.getLogger(__name__)

# The registry's choice of columns: aggregates, then the forget set's metrics.
LEADING = ("MU", "FE")  # the paper's two first
AGGREGATES = LEADING + tuple(a.name for a in ALL_AGGREGATES if a.in_report and a.name not in LEADING)
FORGET_METRICS = tuple(m.name for m in REGISTRY if m.in_report)
TITLES = {a.name: a.title for a in ALL_AGGREGATES}
BETTER = {a.name: a.better for a in ALL_AGGREGATES}
# Numbers compared with a baseline (when the runs have them).
COMPARED = ("MU", "FE", "TOFU_MU", "privleak", *(f"forget/{m}" for m in METRICS))


def better_direction(key: str) -> str:
    """'up' when a higher number is better, 'down' when lower is (on a forget set a lower score
    means more forgotten, except Token entropy, which measures fluency), '0' or '0.5' when the
    best is that value (privleak, the MIA AUCs)."""
    if key.startswith("forget/") and not key.endswith("token_entropy"):
        return "down"
    return {"higher": "up", "lower": "down"}.get(BETTER.get(key, "higher"), BETTER.get(key))


def _arrow(key: str) -> str:
    return {"up": "\u2191", "down": "\u2193"}.get(better_direction(key), "\u2192" + better_direction(key))


@dataclass
class RunResult:
    name: str
    folder: Path
    method: str
    summary: dict  # the numbers shown in the table
    trajectory: list[dict] = field(default_factory=list)  # epoch summaries, in epoch order
    summary_folder: Path | None = None  # the evaluation folder holding the summary's records
    seed_evaluations: list[Path] = field(default_factory=list)  # a seeds folder: each seed's evaluation
    external: bool = False  # open-unlearning's own results: only its numbers (summary["open_unlearning"])

    @property
    def judges(self) -> tuple[str, str]:
        judges = self.summary.get("judges", {})
        return judges.get("embedder") or "none", judges.get("nli") or "none"

    @property
    def intervals(self) -> dict:
        return interval_values(self.summary)


def _epoch_key(folder: Path) -> float:
    try:
        return float(folder.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return float("inf")


def _method_of(folder: Path) -> str:
    for config in (folder / "config.yaml", folder.parent / "config.yaml"):
        if config.exists():
            method = read_yaml(config, written=True).get("method")
            if method:
                return str(method)
    return ""


def _external_run(path: Path) -> RunResult | None:
    """open-unlearning's results at ``path`` (its file, or a folder with one and no summary.json)."""
    from .. import open_unlearning as OU

    files = (OU.SUMMARY_FILE, OU.EVAL_FILE)
    if path.is_file() and path.name in files:
        folder = path.parent
    elif path.is_dir() and not (path / EVAL_SUMMARY).exists() and not (path / "eval").is_dir() \
            and any((path / f).is_file() for f in files):
        folder = path
    else:
        return None
    name = folder.resolve().name or str(folder)
    return RunResult(name, folder, "open-unlearning", {"open_unlearning": OU.read_results(path)}, external=True)


def load_run(path: str | Path) -> RunResult:
    folder = Path(path).expanduser()
    external = _external_run(folder)
    if external is not None:
        return external
    if not folder.is_dir():
        raise UserError(f"report: {path} is not a folder")
    from ..seeds import SEEDS_SUMMARY, evaluation_of, seed_folders

    if (folder / SEEDS_SUMMARY).exists():  # one method, several seeds: the aggregate
        evaluations = [evaluation_of(f) for _, f in seed_folders(folder)]
        first = seed_folders(folder)[0][1] if seed_folders(folder) else folder
        return RunResult(folder.name, folder, _method_of(first), load_summary(folder, SEEDS_SUMMARY),
                         seed_evaluations=[e for e in evaluations if e is not None])
    eval_folder = folder if (folder / EVAL_SUMMARY).exists() else folder / "eval"
    epochs = sorted((p for p in eval_folder.glob("epoch_*") if (p / EVAL_SUMMARY).exists()), key=_epoch_key)
    trajectory = [load_summary(p) for p in epochs]
    if (eval_folder / EVAL_SUMMARY).exists():
        summary, summary_folder = load_summary(eval_folder), eval_folder
    elif trajectory:
        summary, summary_folder = trajectory[-1], epochs[-1]
    else:
        raise UserError(f"report: {path} holds no evaluation (no summary.json); run `unlearnlm evaluate {path}` first")
    name = folder.name if folder.name not in ("eval", "") else folder.resolve().parent.name
    return RunResult(name, folder, _method_of(folder), summary, trajectory, summary_folder)


# ---- the table ---------------------------------------------------------------------------------


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


def _heading(column: str) -> str:
    return f"{column} {_arrow(column)}" if column in AGGREGATES or column.startswith("forget/") else column


def _html_heading(column: str, prefix: str = "") -> str:
    """A short two-line header: ``forget<br>ROUGE ↓``."""
    if column.startswith("forget/"):
        metric = column.split("/", 1)[1]
        return f"{prefix}forget<br>{html.escape(METRIC_TITLES.get(metric, metric))} {_arrow(column)}"
    return html.escape(prefix + _heading(column))


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
    lines = ["| " + " | ".join(_heading(c) for c in shown) + " |", "|" + "---|" * len(shown)]
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


def section_open_unlearning(columns: list[str], rows: list[dict]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(row[c]))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return ('<section id="open-unlearning"><h2>open-unlearning\'s TOFU numbers</h2><p>Its names and '
            "definitions (docs/formulas.md): open-unlearning's own results beside unlearnlm's evaluations "
            "with suite=open-unlearning.</p>"
            f'<div class="wide"><table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div></section>")


# ---- paired comparisons with a baseline ------------------------------------------------------------


@dataclass
class Comparison:
    """Every run minus the baseline, on the same resampled rows: {run: {key: {difference, interval,
    distinguishable}}}."""

    baseline: str
    level: float
    samples: int
    results: dict[str, dict[str, dict]]


def find_baseline(runs: Sequence[RunResult], name: str) -> RunResult:
    """The run named ``name`` (its folder name, else its method)."""
    for attribute in ("name", "method"):
        matches = [r for r in runs if str(getattr(r, attribute)).lower() == name.lower()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UserError(f"report: baseline '{name}' names {len(matches)} runs; use a run's folder name")
    raise UserError(f"report: no run is named '{name}' (the runs: {', '.join(r.name for r in runs)})")


def _run_replicates(run: RunResult, base_rows: list[S.SetRows], what: str, settings: BootstrapConfig) -> S.Replicates:
    """A run's replicates on the baseline's rows; a seeds run: the seeds' pooled replicates."""
    # Each run's privleak against its own reference (its retain model's AUC, as in its summary).
    if run.seed_evaluations:
        return S.pooled_over_seeds([
            S.bootstrap(S.align_rows(read_set_rows(e), base_rows, what=what), folder_scoring(e), settings.samples,
                        settings.seed)
            for e in run.seed_evaluations])
    rows = S.align_rows(_records_of(run), base_rows, what=what)
    return S.bootstrap(rows, folder_scoring(run.summary_folder), settings.samples, settings.seed)


def _records_of(run: RunResult) -> list[S.SetRows]:
    if run.summary_folder is None or not (run.summary_folder / RECORDS_DIR).is_dir():
        raise UserError(f"report: {run.name} has no per-row records ({RECORDS_DIR}/); "
                        "a paired comparison resamples them")
    return read_set_rows(run.summary_folder)


def compare_with_baseline(runs: Sequence[RunResult], baseline_name: str,
                          settings: BootstrapConfig | None = None) -> Comparison:
    """The paired bootstrap of every run's difference from the baseline (same resampled rows)."""
    baseline = find_baseline(runs, baseline_name)
    if settings is None:  # the intervals' own settings, so both agree
        block = baseline.summary.get("intervals") or {}
        settings = BootstrapConfig(samples=int(block.get("samples", S.DEFAULT_SAMPLES)),
                                   seed=int(block.get("seed", 0)), level=float(block.get("level", S.DEFAULT_LEVEL)))
    base_rows = read_set_rows(baseline.seed_evaluations[0]) if baseline.seed_evaluations else _records_of(baseline)
    base = _run_replicates(baseline, base_rows, "the baseline", settings)
    results = {}
    for run in runs:
        if run is baseline:
            continue
        mine = _run_replicates(run, base_rows, f"baseline {baseline.name}", settings)
        results[run.name] = S.paired_difference(mine, base, settings.level)
    return Comparison(baseline.name, settings.level, settings.samples, results)


def _difference_text(result: dict | None) -> str:
    if not result:
        return "-"
    interval = result["interval"]
    text = f"{result['difference']:+.4f}"
    if interval:
        text += " " + S.format_interval(interval, signed=True)
    return text + (" *" if result["distinguishable"] else "")


def comparison_keys(comparison: Comparison) -> list[str]:
    present = {k for results in comparison.results.values() for k in results}
    return [k for k in COMPARED if k in present]


def comparison_markdown(comparison: Comparison) -> str:
    keys = comparison_keys(comparison)
    lines = [f"Difference from {comparison.baseline} (paired bootstrap, {S.percent(comparison.level)} interval on the "
             f"same resampled rows; * = distinguishable: the interval excludes 0)", "",
             "| run | " + " | ".join(f"\u0394{k} {_arrow(k)}" for k in keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for run, results in comparison.results.items():
        lines.append(f"| {run} | " + " | ".join(_difference_text(results.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def comparison_csv(comparison: Comparison) -> str:
    rows = []
    for run, results in comparison.results.items():
        for key, result in results.items():
            low, high = result["interval"] or ("", "")
            rows.append({"run": run, "baseline": comparison.baseline, "number": key, "difference": result["difference"],
                         "low": low, "high": high, "distinguishable": result["distinguishable"]})
    return csv_text(["run", "baseline", "number", "difference", "low", "high", "distinguishable"], rows)


# ---- plots -------------------------------------------------------------------------------------


def _bounds(run: RunResult, key: str) -> tuple[float, float] | None:
    interval = run.intervals.get(key)
    return (float(interval[0]), float(interval[1])) if interval else None


def _fitted_limits(values: Sequence[float], pad: float = 0.08, minimum_span: float = 0.1) -> tuple[float, float]:
    """Limits around ``values`` with a margin, kept inside [-0.02, 1.02] (every number is in [0, 1])."""
    low, high = min(values), max(values)
    span = max(high - low, minimum_span)
    centre = (low + high) / 2
    low, high = centre - span / 2 - pad * span, centre + span / 2 + pad * span
    return max(-0.02, low), min(1.02, high)


def _overlap(a, b) -> float:
    """Overlapping area of two display-space boxes (x0, y0, x1, y1)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def place_labels(axis, points: Sequence[tuple[float, float]], labels: Sequence[str], fontsize: float = 8) -> list:
    """Labels next to their points, never on another label or point: each label, in order, takes
    the first of a fixed list of offsets (nearest first) where its box overlaps no placed label, no
    point and stays inside the axes; when none is free it takes the least-overlapping one, with a
    leader line. Deterministic: the same points give the same layout."""
    figure = axis.figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    inside = axis.get_window_extent(renderer)
    scale = figure.dpi / 72.0
    marker = 5 * scale
    taken = [(x - marker, y - marker, x + marker, y + marker)
             for x, y in (axis.transData.transform(p) for p in points)]
    offsets = []
    for radius in (6, 14, 24, 36, 50):
        for dx, dy in ((1, 0.6), (1, -1), (-1, 0.6), (-1, -1), (0, 1.4), (0, -1.8), (1.4, 0), (-1.4, 0)):
            offsets.append((dx * radius, dy * radius))
    texts = []
    for (x, y), label in zip(points, labels, strict=True):
        text = axis.annotate(label, (x, y), textcoords="offset points", xytext=(0, 0), fontsize=fontsize,
                             ha="left", va="bottom")
        best, best_cost = None, None
        for dx, dy in offsets:
            text.set_position((dx, dy))
            text.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
            text.set_va("bottom" if dy > 0 else "top")
            box = text.get_window_extent(renderer)
            box = (box.x0 - 1, box.y0 - 1, box.x1 + 1, box.y1 + 1)
            outside = (max(0, inside.x0 - box[0]) + max(0, box[2] - inside.x1)
                       + max(0, inside.y0 - box[1]) + max(0, box[3] - inside.y1))
            cost = sum(_overlap(box, other) for other in taken) + 1000 * outside
            if best_cost is None or cost < best_cost - 1e-9:
                best, best_cost = (dx, dy, box), cost
            if cost == 0:
                break
        dx, dy, box = best
        text.set_position((dx, dy))
        text.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
        text.set_va("bottom" if dy > 0 else "top")
        if abs(dx) > 14 or abs(dy) > 14:  # far from its point: a leader line says whose label it is
            axis.annotate("", (x, y), xytext=(dx, dy), textcoords="offset points",
                          arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6})
        taken.append(box)
        texts.append(text)
    return texts


def _better_arrow(axis) -> None:
    """A small arrow in a corner pointing where both numbers are better."""
    axis.annotate("better", xy=(0.97, 0.97), xytext=(0.84, 0.84), xycoords="axes fraction",
                  textcoords="axes fraction", ha="right", va="top", fontsize=8, color="0.35",
                  arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 1.0})


def plot_mu_fe(runs: Sequence[RunResult]) -> bytes:
    """One point per run: Forget Efficacy (x) against Model Utility (y), interval bars; marker = judges."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 5.2))
    markers = {combo: m for combo, m in zip(sorted({r.judges for r in runs}), "os^Dv<>p*h", strict=False)}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labelled, points, labels, xs, ys = set(), [], [], [], []
    for index, run in enumerate(runs):
        mu, fe = run.summary.get("MU"), run.summary.get("FE")
        if mu is None or fe is None:
            continue
        label = None if run.judges in labelled else "judges: {} / {}".format(*run.judges)
        labelled.add(run.judges)
        fe_bounds, mu_bounds = _bounds(run, "FE"), _bounds(run, "MU")
        xerr = [[fe - fe_bounds[0]], [fe_bounds[1] - fe]] if fe_bounds else None
        yerr = [[mu - mu_bounds[0]], [mu_bounds[1] - mu]] if mu_bounds else None
        colour = colours[index % len(colours)]
        axis.errorbar([fe], [mu], xerr=xerr, yerr=yerr, fmt=markers[run.judges], color=colour, ms=7,
                      ecolor=colour, elinewidth=1, capsize=3, alpha=0.9, label=label)
        points.append((fe, mu))
        labels.append(run.name)
        xs += [fe, *(fe_bounds or ())]
        ys += [mu, *(mu_bounds or ())]
    if points:
        axis.set_xlim(*_fitted_limits(xs))
        axis.set_ylim(*_fitted_limits(ys))
    axis.set_xlabel("Forget Efficacy \u2192 (higher: forgot more)")
    axis.set_ylabel("Model Utility \u2192 (higher: kept more)")
    axis.grid(alpha=0.3)
    has_intervals = any(r.intervals for r in runs)
    level = S.levels_label(S.interval_level(r.summary) for r in runs if r.intervals)
    axis.set_title("MU vs FE" + (f" (bars: {level} bootstrap intervals)" if has_intervals else ""), fontsize=10)
    _better_arrow(axis)
    if len(markers) > 1:  # never mix judges without saying so
        axis.legend(fontsize="x-small", loc="lower left")
    figure.tight_layout()
    if points:
        place_labels(axis, points, labels)
    return png_bytes(figure)


def plot_metrics(runs: Sequence[RunResult]) -> bytes | None:
    """One panel per headline number: each run's value and interval, the better side marked."""
    keys = [k for k in ("MU", "FE", "TOFU_MU", *(f"forget/{m}" for m in METRICS))
            if any(flat_numbers(r.summary).get(k) is not None for r in runs)]
    if not keys:
        return None
    plt = _pyplot()
    columns = 3
    rows = (len(keys) + columns - 1) // columns
    height = 0.3 * len(runs) + 1.0
    figure, axes = plt.subplots(rows, columns, figsize=(11, height * rows), squeeze=False, sharey=True)
    names = [r.name for r in runs]
    for axis, key in zip(axes.flat, keys, strict=False):
        for position, run in enumerate(runs):
            value = flat_numbers(run.summary).get(key)
            if value is None:
                continue
            bounds = _bounds(run, key)
            xerr = [[value - bounds[0]], [bounds[1] - value]] if bounds else None
            axis.errorbar([value], [position], xerr=xerr, fmt="o", ms=4, color="C0", ecolor="C0", capsize=2)
        title = TITLES.get(key, key)
        better = "higher is better" if better_direction(key) == "up" else "lower is better"
        axis.set_title(f"{title} {_arrow(key)} ({better})", fontsize=9)
        axis.set_yticks(range(len(runs)), names, fontsize=8)
        axis.tick_params(axis="x", labelsize=8)
        axis.grid(alpha=0.3, axis="x")
    for axis in list(axes.flat)[len(keys):]:
        axis.set_visible(False)
    axes.flat[0].set_ylim(len(runs) - 0.5, -0.5)  # shared: the first run on top in every panel
    figure.tight_layout()
    return png_bytes(figure)


def plot_trajectories(runs: Sequence[RunResult]) -> bytes | None:
    """MU and FE against the epoch, one line per run with per-epoch evaluations, interval bands."""
    with_epochs = [r for r in runs if r.trajectory]
    if not with_epochs:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for index, run in enumerate(with_epochs):
        colour = f"C{index % 10}"
        for axis, key in zip(axes, ("MU", "FE"), strict=True):
            points = [(s.get("epoch"), s.get(key), interval_values(s).get(key)) for s in run.trajectory]
            points = [(e, v, b) for e, v, b in points if e is not None and v is not None]
            if not points:
                continue
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colour, label=run.name)
            banded = [p for p in points if p[2]]
            if len(banded) > 1:
                axis.fill_between([p[0] for p in banded], [p[2][0] for p in banded], [p[2][1] for p in banded],
                                  color=colour, alpha=0.15, linewidth=0)
    from matplotlib.ticker import MaxNLocator

    for axis, title in zip(axes, ("Model Utility \u2191", "Forget Efficacy \u2191"), strict=True):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        banded = [s for r in with_epochs for s in r.trajectory if interval_values(s)]
        level = S.levels_label(S.interval_level(s) for s in banded)
        axis.set_title(title + f" (bands: {level} intervals)" if banded else title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    return png_bytes(figure)


# ---- answers side by side ----------------------------------------------------------------------------


def answer_examples(runs: Sequence[RunResult], per_set: int = 3) -> list[dict]:
    """The first ``per_set`` questions of the forget and retain sets, with every run's answer."""
    examples = []
    for set_name in ("forget", "retain"):
        answers: dict[str, dict[str, str]] = {}
        truths: dict[str, str] = {}
        order: list[str] = []
        for run in runs:
            path = (run.summary_folder or run.folder) / RECORDS_DIR / f"{set_name}.jsonl"
            if not path.exists():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                question = row.get("question")
                if question is None:
                    continue
                if question not in truths:
                    truths[question] = row.get("ground_truth") or row.get("answer") or ""
                    order.append(question)
                answers.setdefault(question, {})[run.name] = row.get("generation", "")
        for question in order[:per_set]:
            examples.append({"set": set_name, "question": question, "truth": truths[question],
                             "answers": answers[question]})
    return examples


# ---- the page: one function per section ----------------------------------------------------------


def section_table(columns: list[str], rows: list[dict], note: str | None, level: str) -> str:
    """``level``: the intervals' level label (statistics.levels_label of the runs shown)."""
    shown = shown_columns(columns)
    head = "".join(f"<th>{_html_heading(c)}</th>" for c in shown)
    body = "".join(
        "<tr>" + "".join(f"<td>{_html_cell(row, c)}</td>" for c in shown) + "</tr>" for row in rows
    )
    has_intervals = any(f"{c}_low" in columns for c in shown)
    explanation = ("MU = Model Utility (harmonic mean over the utility sets), FE = Forget Efficacy, TOFU_MU = TOFU's "
                   "Model Utility, FQ = Forget Quality (KS-test p-value against a retain model; no interval), "
                   "privleak = privacy leakage of Min-K% against a retain model (ideal 0, -100 = memorised), "
                   "AUC_min_k = Min-K% membership-inference AUC of forget vs holdout rows (0.5 = "
                   "indistinguishable); forget/* = the forget set's metrics (extraction_strength and "
                   "exact_memorisation: higher = more of the forget answers reproduced). \u2191 / \u2193: which way "
                   "is better; \u2192x: closest to x is best.")
    if has_intervals:
        explanation += f" Beneath each number: its {level} bootstrap interval over the evaluation's rows."
    return (f'<section id="results"><h2>Results</h2><p>{html.escape(explanation)}</p>'
            + (f'<p class="note">{html.escape(note)}</p>' if note else "")
            + f'<div class="wide"><table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            + "</div></section>")


def _html_cell(row: dict, column: str) -> str:
    value = row[column]
    low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
    sd = row.get(f"{column}_sd")
    spread = f'<br><span class="ci">sd \u00b1{sd:.4f}</span>' if sd is not None else ""
    if isinstance(value, float) and low is not None and high is not None:
        return f'{value:.4f}{spread}<br><span class="ci">{S.format_interval([low, high])}</span>'
    return html.escape(format_cell(value)) + spread


def section_comparison(comparison: Comparison | None) -> str:
    if comparison is None or not comparison.results:
        return ""
    keys = comparison_keys(comparison)
    head = "<th>run</th>" + "".join(f"<th>{_html_heading(k, prefix=chr(0x394))}</th>" for k in keys)
    body = ""
    for run, results in comparison.results.items():
        cells = ""
        for key in keys:
            result = results.get(key)
            if not result:
                cells += "<td>-</td>"
                continue
            interval = result["interval"]
            shown = f"{result['difference']:+.4f}"
            if interval:
                shown += f'<br><span class="ci">{S.format_interval(interval, signed=True)}</span>'
            css = "yes" if result["distinguishable"] else "no"
            cells += f'<td class="{css}">{shown}</td>'
        body += f"<tr><td>{html.escape(run)}</td>{cells}</tr>"
    text = (f"Each run minus {comparison.baseline}, bootstrapped on the same resampled rows "
            f"({comparison.samples} resamples, {S.percent(comparison.level)} interval). Highlighted: distinguishable "
            "(the interval excludes 0); grey: not distinguishable at this scale.")
    return (f'<section id="comparison"><h2>Paired comparison with {html.escape(comparison.baseline)}</h2>'
            f'<p>{html.escape(text)}</p><div class="wide"><table class="comparison"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div></section>")


def section_figures(images: dict[str, bytes]) -> str:
    figures = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, data in images.items()
    )
    return f'<section id="plots"><h2>Plots</h2>{figures}</section>' if figures else ""


def section_answers(examples: Sequence[dict]) -> str:
    """Per set, one table: a column per question (its ground truth beneath), a row per model."""
    if not examples:
        return ""
    parts = []
    for set_name in dict.fromkeys(e["set"] for e in examples):
        chosen = [e for e in examples if e["set"] == set_name]
        runs = list(dict.fromkeys(run for e in chosen for run in e["answers"]))
        head = "<th></th>" + "".join(
            f'<th><span class="tag {set_name}">{set_name}</span> {html.escape(e["question"])}'
            f'<div class="truth">truth: {html.escape(e["truth"])}</div></th>' for e in chosen)
        body = "".join(
            f"<tr><th>{html.escape(run)}</th>"
            + "".join(f"<td>{html.escape(e['answers'].get(run, '-'))}</td>" for e in chosen) + "</tr>"
            for run in runs)
        parts.append(f'<div class="wide"><table class="answers"><thead><tr>{head}</tr></thead>'
                     f"<tbody>{body}</tbody></table></div>")
    return ('<section id="answers"><h2>Answers side by side</h2><p>The first questions of the forget and '
            "retain sets, answered by every model (greedy decoding, as scored).</p>" + "".join(parts) + "</section>")


def section_skipped(rows: Sequence[dict]) -> str:
    skipped = "".join(f"<li><b>{html.escape(row['run'])}</b>: {html.escape(row['skipped'])}</li>"
                      for row in rows if row.get("skipped"))
    return f'<section id="skipped"><h2>Skipped metrics</h2><ul>{skipped}</ul></section>' if skipped else ""


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.55em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2) { text-align: left; }
table.results td, table.comparison td { white-space: nowrap; }
.ci { color: #777; font-size: 0.85em; white-space: nowrap; }
.note { background: #fff4d6; padding: 0.6em; border-left: 4px solid #e0a800; }
td.yes { background: #e3f1e3; font-weight: 600; } td.no { color: #888; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.wide { overflow-x: auto; margin: 0.6em 0 1.2em; }
.truth { color: #555; font-size: 0.9em; font-weight: normal; margin-top: 0.3em; }
table.answers { table-layout: fixed; width: 100%; }
table.answers th, table.answers td { text-align: left; }
table.answers tbody th { white-space: nowrap; font-weight: normal; width: 7em; }
table.answers thead th:first-child { width: 7em; }
.tag { font-size: 0.75em; padding: 0.1em 0.4em; border-radius: 3px; color: white; background: #888; }
.tag.forget { background: #c0392b; } .tag.retain { background: #2e7d32; }
"""

# Sets data-images on <body> to how many figures decoded, so a browser test can check them.
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images', images.filter(function (i) { return i.naturalWidth > 0; }).length);
});
</script>"""


def html_page(sections: Sequence[str]) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>unlearnlm report</title>
<style>{STYLE}</style></head><body>
<h1>Unlearning report</h1>
{"".join(s for s in sections if s)}
{CHECK_SCRIPT}
</body></html>
"""


def write_report(run_paths: Sequence[str], output: str | Path = "report", baseline: str | None = None) -> Path:
    """Write the comparison of ``run_paths`` into ``output``; returns the HTML page's path.
    ``baseline``: a run's name (or method) every other run is compared with, pairwise."""
    every_run = [load_run(p) for p in run_paths]
    seen: dict[Path, str] = {}
    for path, run in zip(run_paths, every_run, strict=True):
        folder = (run.summary_folder or run.folder).resolve()
        if folder in seen:
            raise UserError(f"report: {seen[folder]} and {path} are the same run; a run compared with itself "
                            "shows nothing")
        seen[folder] = str(path)
    names = [r.name for r in every_run]
    for index, run in enumerate(every_run):  # two folders with one name: tell them apart
        if names.count(run.name) > 1:
            run.name = f"{run.name} ({run.folder.parent.name or index})"
    suite_columns, suite_rows = open_unlearning_table(every_run)
    runs = [r for r in every_run if not r.external]  # open-unlearning's results: its table only
    comparison = compare_with_baseline(runs, baseline) if baseline else None
    output = Path(output)
    from .attacks import write_attack_section  # runs attacked by `unlearnlm attack`

    attack_section, attack_plot = write_attack_section(runs, output)  # an unreadable one fails before any write
    columns, rows = table_rows(runs)
    note = " ".join(n for n in (judges_note(runs), privleak_note(runs)) if n) or None
    markdown = markdown_table(columns, rows) + (f"\n> {note}\n" if note else "")
    if comparison is not None:
        markdown += "\n" + comparison_markdown(comparison)
        atomic_write_text(output / "comparison.csv", comparison_csv(comparison))
    if suite_rows:
        markdown += "\n" + open_unlearning_markdown(suite_columns, suite_rows)
        atomic_write_text(output / "report_open_unlearning.csv", csv_text(suite_columns, suite_rows))
    atomic_write_text(output / "report.md", markdown)
    atomic_write_text(output / "report.csv", csv_text(columns, rows, ignore_other_keys=True))
    images = {}
    for title, file_name, plot in (("Model Utility vs Forget Efficacy", "mu_fe.png", plot_mu_fe),
                                   ("Every headline number with its interval", "metrics.png", plot_metrics),
                                   ("Per-epoch trajectories", "trajectories.png", plot_trajectories)):
        data = plot(runs)
        if data is not None:
            images[title] = data
            _write_bytes(output / file_name, data)
    if attack_section:
        markdown += "\n" + attack_section
        atomic_write_text(output / "report.md", markdown)
        images["Recovery under attack (method x attack)"] = attack_plot
    level = S.levels_label(S.interval_level(r.summary) for r in runs)
    sections = [section_table(columns, rows, note, level), section_open_unlearning(suite_columns, suite_rows),
                section_comparison(comparison), section_figures(images),
                section_answers(answer_examples(runs)), section_skipped(rows)]
    page = output / "report.html"
    atomic_write_text(page, html_page(sections))
    logger.info(markdown.rstrip("\n"))
    return page


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
