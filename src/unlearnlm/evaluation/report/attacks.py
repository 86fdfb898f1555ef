"""The report's robustness part: a method x attack table of recovery, and a plot of it.

Reads RUN/attacks/summary.json (written by ``unlearnlm attack RUN``) of every reported run that
has one. A cell is the attack's mean recovery over the forget metrics of Forget Efficacy
(ROUGE, Probability, Truth ratio, Cosine, Entailment; those with a value): 0 = the forgetting
held, 1 = the target's knowledge is back, with its paired bootstrap interval over the forget rows
beneath. report_attacks.csv holds every metric's recovery and interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import UserError
from ...figures import png_bytes, pyplot
from ...io import read_json
from ...tables import csv_text
from ..metrics import FORGET_EFFICACY_METRICS
from ..recovery import RECOVERY_METRICS, RECOVERY_TITLES
from ..statistics import levels_label, short_interval

ATTACK_SUMMARY = Path("attacks") / "summary.json"


def attack_summaries(runs: Sequence) -> list[tuple[str, dict]]:
    """(row label, attack summary) of each run (RunResult) with attacks, in the report's order."""
    found = []
    for run in runs:
        path = Path(run.folder) / ATTACK_SUMMARY
        if path.exists():
            summary = read_attack_summary(path)
            label = f"{run.method} ({run.name})" if run.method and run.method != run.name else run.name
            found.append((label, summary))
    return found


def read_attack_summary(path: Path) -> dict:
    """RUN/attacks/summary.json, checked: a run's attacks are never dropped from a report silently."""
    summary = read_json(path)
    attacks = summary.get("attacks")
    if not isinstance(attacks, list) or not all(isinstance(a, dict) and isinstance(a.get("attack"), str)
                                                for a in attacks):
        raise UserError(f"{path}: 'attacks' is not a list of attacks: not an attack summary unlearnlm wrote; "
                        "run `unlearnlm attack` on the run again")
    for key in ("unlearned", "target_model"):
        if not isinstance(summary.get(key, {}), dict):
            raise UserError(f"{path}: '{key}' is not a mapping: not an attack summary unlearnlm wrote")
    return summary


def attack_names(summaries: Sequence[tuple[str, dict]]) -> list[str]:
    names: list[str] = []
    for _, summary in summaries:
        names += [a["attack"] for a in summary.get("attacks", []) if a["attack"] not in names]
    return names


def recovery_matrix(summaries: Sequence[tuple[str, dict]], key: str = "mean_recovery"
                    ) -> tuple[list[str], list[str], list[list]]:
    """Row labels, attack names and each attack's ``key`` (the mean recovery, or its interval:
    mean_recovery_interval); None where not run or no value."""
    names = attack_names(summaries)
    cells = []
    for _, summary in summaries:
        by_name = {a["attack"]: a.get(key) for a in summary.get("attacks", [])}
        cells.append([by_name.get(n) for n in names])
    return [label for label, _ in summaries], names, cells


def _format(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _with_interval(value, interval) -> str:
    return _format(value) + (f" {short_interval(interval)}" if value is not None and interval else "")


def attack_markdown(summaries: Sequence[tuple[str, dict]]) -> str:
    """The method x attack table (mean recovery), with each run's FE and MU before attack."""
    labels, names, cells = recovery_matrix(summaries)
    bounds = recovery_matrix(summaries, "mean_recovery_interval")[2]
    level = levels_label((s.get("recovery_bootstrap") or {}).get("level") for _, s in summaries)
    lines = ["## Robustness: recovery under attack", "",
             "Mean recovery of the forget metrics, (m(attacked) - m(unlearned)) / (m(target) - m(unlearned)): "
             f"0 = the forgetting held, 1 = back to the target; in brackets its {level} paired bootstrap interval "
             "over the forget rows (above 0: knowledge came back beyond the rows' noise).", "",
             "| method | FE | MU | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 3)]
    for (label, summary), row, row_bounds in zip(summaries, cells, bounds, strict=True):
        unlearned = summary.get("unlearned", {})
        lines.append(f"| {label} | {_format(unlearned.get('FE'))} | {_format(unlearned.get('MU'))} | "
                     + " | ".join(_with_interval(v, b) for v, b in zip(row, row_bounds)) + " |")
    verdicts = attack_verdicts(summaries)
    if verdicts:
        lines += ["", "Which forgetting survives, read from each forget metric's recovery interval (came back: "
                  "above 0; five metrics are read, so one of them may cross 0 by chance):", "", *verdicts]
    skipped = sorted({f"{s['attack']} ({s['reason']})" for _, summary in summaries for s in summary.get("skipped", [])})
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def attack_verdicts(summaries: Sequence[tuple[str, dict]]) -> list[str]:
    """In words, per attack and method, read from the intervals: first, nothing to recover where
    the method's own forgetting on these rows (FE(U) - FE(T)) is not distinguishable from 0; else
    the knowledge came back on each forget metric whose recovery interval lies above 0; else no
    distinguishable recovery (or too few rows to tell, where no metric has an interval)."""
    names = attack_names(summaries)
    nothing = "nothing distinguishable to recover (FE not above the target's) for"
    no_interval = "too few rows to tell for"
    lines = []
    for name in names:
        groups: dict[str, list[str]] = {}
        for label, summary in summaries:
            attack = next((a for a in summary.get("attacks", []) if a["attack"] == name), None)
            if attack is None or attack.get("mean_recovery") is None:
                continue
            bounds = attack.get("recovery_interval") or {}
            forgot = attack.get("forgetting_interval")
            back = [m for m in FORGET_EFFICACY_METRICS if bounds.get(m) and bounds[m][0] > 0]
            if forgot and forgot[0] <= 0:
                reading, shown = nothing, label
            elif back:
                reading = "knowledge came back for"
                shown = f"{label} (" + ", ".join(
                    f"{RECOVERY_TITLES[m]} {_with_interval(attack['recovery'][m], bounds[m])}" for m in back) + ")"
            elif any(bounds.get(m) for m in FORGET_EFFICACY_METRICS):
                reading, shown = "no distinguishable recovery for", label
            else:
                reading, shown = no_interval, label
            groups.setdefault(reading, []).append(shown)
        order = ["knowledge came back for", "no distinguishable recovery for", no_interval, nothing]
        parts = [f"{reading} {', '.join(groups[reading])}" for reading in order if reading in groups]
        if parts:
            lines.append(f"- **{name}**: " + "; ".join(parts) + ".")
    return lines


def attack_csv(summaries: Sequence[tuple[str, dict]]) -> str:
    """One row per run and attack: FE, MU, every metric's recovery and the mean."""
    recovery_columns = [*(f"recovery/{m}" for m in RECOVERY_METRICS), "mean_recovery"]
    columns = ["method", "attack", "rows", "FE", "MU",
               *(f"{c}{end}" for c in recovery_columns for end in ("", "_low", "_high"))]
    rows = []
    for label, summary in summaries:
        for attack in summary.get("attacks", []):
            row = {"method": label, "attack": attack["attack"], "rows": attack.get("rows"), "FE": attack.get("FE"),
                   "MU": attack.get("MU"), "mean_recovery": attack.get("mean_recovery")}
            row.update({f"recovery/{m}": attack.get("recovery", {}).get(m) for m in RECOVERY_METRICS})
            bounds = {f"recovery/{m}": (attack.get("recovery_interval") or {}).get(m) for m in RECOVERY_METRICS}
            bounds["mean_recovery"] = attack.get("mean_recovery_interval")
            for column, interval in bounds.items():
                row[f"{column}_low"], row[f"{column}_high"] = interval if interval else (None, None)
            rows.append(row)
    return csv_text(columns, rows)


def plot_attack_recovery(summaries: Sequence[tuple[str, dict]]) -> bytes:
    """A heat map of the method x attack table, each cell written in it (grey: no value, or nothing
    distinguishable to recover)."""
    import numpy as np

    plt = pyplot()

    labels, names, cells = recovery_matrix(summaries)
    bounds = recovery_matrix(summaries, "mean_recovery_interval")[2]
    forgetting = recovery_matrix(summaries, "forgetting_interval")[2]
    # grey where the method forgot nothing distinguishable: its recovery is a ratio of noise
    nothing = [[bool(f) and f[0] <= 0 for f in row] for row in forgetting]
    values = np.array([[np.nan if v is None or gone else v for v, gone in zip(row, row_nothing)]
                        for row, row_nothing in zip(cells, nothing)], dtype=float)
    figure, axis = plt.subplots(figsize=(2.4 + 1.1 * len(names), 1.2 + 0.5 * len(labels)))
    cmap = plt.get_cmap("RdYlGn_r").with_extremes(bad="#dddddd")
    image = axis.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(len(labels)):
        for j in range(len(names)):
            interval = bounds[i][j] if cells[i][j] is not None else None
            # a recovery over a near-zero gap has an interval of millions: said, not printed, in a cell
            interval = "" if not interval else short_interval(interval) if max(map(abs, interval)) < 100 else "[>±100]"
            text = _format(cells[i][j]) + (f"\n{interval}" if interval else "")
            axis.text(j, i, "nothing to\nrecover" if nothing[i][j] else text, ha="center", va="center", fontsize=6.5)
    axis.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
    axis.set_yticks(range(len(labels)), labels, fontsize=7)
    figure.colorbar(image, ax=axis).set_label("recovery: 0 held, 1 = target", fontsize=7)
    axis.set_title("Recovery of forgotten knowledge under attack", fontsize=9)
    figure.tight_layout()
    return png_bytes(figure)


def write_attack_section(runs: Sequence, output: Path) -> tuple[str, bytes | None]:
    """report_attacks.csv and attacks.png into ``output``; returns the markdown section and the
    plot ("" and None when no run has attack summaries)."""
    from ...io import atomic_write_bytes, atomic_write_text

    summaries = attack_summaries(runs)
    if not summaries or not attack_names(summaries):
        return "", None
    atomic_write_text(output / "report_attacks.csv", attack_csv(summaries))
    png = plot_attack_recovery(summaries)
    atomic_write_bytes(output / "attacks.png", png)
    return attack_markdown(summaries), png
