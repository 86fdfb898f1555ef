"""Paired comparisons with a baseline: every run minus the baseline on the same resampled rows
(statistics.paired_difference), as a markdown table and a CSV."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...config import BootstrapConfig
from ...errors import UserError
from ...tables import csv_text
from .. import statistics as S
from ..evaluate import folder_scoring
from ..metrics import METRICS
from ..runs import RECORDS_DIR, read_set_rows
from .load import RunResult
from .tables import arrow

# Numbers compared with a baseline (when the runs have them).
COMPARED = ("MU", "FE", "TOFU_MU", "privleak", *(f"forget/{m}" for m in METRICS))


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
             "| run | " + " | ".join(f"\u0394{k} {arrow(k)}" for k in keys) + " |", "|" + "---|" * (len(keys) + 1)]
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
