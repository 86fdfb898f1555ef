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

The package, one module per step (this file only puts them together, in ``write_report``):

    load.py      a RUN read back (RunResult: its summary, epochs, seeds, records folder), answers side by side
    tables.py    the columns, each run's row with its intervals, the markdown table and its notes
    compare.py   the paired comparison of every run with a baseline
    plots.py     the figures as PNG bytes
    page.py      the HTML page: one function per section, each an HTML fragment
    attacks.py   the method x attack recovery of runs attacked by ``unlearnlm attack``
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ...errors import UserError
from ...io import atomic_write_bytes, atomic_write_text
from ...tables import csv_text
from .. import statistics as S
from .attacks import write_attack_section
from .compare import compare_with_baseline, comparison_csv, comparison_markdown
from .load import answer_examples, load_run
from .page import (
    html_page,
    section_answers,
    section_comparison,
    section_figures,
    section_open_unlearning,
    section_skipped,
    section_table,
)
from .plots import plot_metrics, plot_mu_fe, plot_trajectories
from .tables import (
    judges_note,
    markdown_table,
    open_unlearning_markdown,
    open_unlearning_table,
    privleak_note,
    table_rows,
)

logger = logging.getLogger(__name__)


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
    # Runs attacked by `unlearnlm attack`: an unreadable attack summary fails before any write.
    attack_section, attack_plot = write_attack_section(runs, output)
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
            atomic_write_bytes(output / file_name, data)
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
