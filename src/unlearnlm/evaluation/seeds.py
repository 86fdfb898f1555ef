"""One method run with several seeds: mean ± sd over the seeds and the pooled interval.

A seeds folder (``unlearn seeds=[...]``) holds one run per seed, ``seed_S/``, each evaluated
in ``seed_S/eval`` (a final evaluation, else its last ``epoch_K``). Its aggregate,
``seeds_summary.json``, has the shape of an evaluation summary (so a report shows it as one
row): every number is the mean over the seeds, its interval resamples the rows within each
seed's records (the same resampled questions for every seed, whose replicates are averaged),
and ``seeds`` holds each number's mean, standard deviation and count over the seeds.
"""

from __future__ import annotations

from pathlib import Path

from ..config import BootstrapConfig
from ..errors import UserError
from . import statistics as S
from .evaluate import aggregates, folder_scoring
from .runs import EVAL_SUMMARY, evaluation_of, interval_values, load_summary, read_set_rows, write_summary

SEEDS_SUMMARY = "seeds_summary.json"
NUMBERS = ("MU", "MU_retain", "FE", "TOFU_MU", "FQ")


def seed_folders(run: str | Path) -> list[tuple[int, Path]]:
    """(seed, run folder) of every seed_S folder, in seed order."""
    found = []
    for folder in Path(run).glob("seed_*"):
        try:
            found.append((int(folder.name.split("_", 1)[1]), folder))
        except ValueError:
            continue
    return sorted(found)


def is_seeds_folder(run: str | Path) -> bool:
    return bool(seed_folders(run))


def seed_replicates(run: str | Path, settings: BootstrapConfig) -> tuple[list[int], list[dict], list[S.Replicates]]:
    """Each evaluated seed's summary and bootstrap replicates (rows matched to the first seed's)."""
    seeds, summaries, replicates, base_rows = [], [], [], None
    for seed, folder in seed_folders(run):
        evaluation = evaluation_of(folder)
        if evaluation is None:
            raise UserError(f"{folder} holds no evaluation; run `unlearnlm evaluate {run}` first")
        summary = load_summary(evaluation)
        rows = read_set_rows(evaluation)
        if base_rows is None:
            base_rows = rows
        else:
            rows = S.align_rows(rows, base_rows, what=f"seed {seeds[0]}")
        seeds.append(seed)
        summaries.append(summary)
        replicates.append(S.bootstrap(rows, folder_scoring(evaluation), settings.samples, settings.seed))
    if not seeds:
        raise UserError(f"{run} holds no seed_S run folders")
    return seeds, summaries, replicates


def aggregate_seeds(run: str | Path, settings: BootstrapConfig | None = None) -> dict:
    """Write ``RUN/seeds_summary.json`` (mean ± sd over the seeds, pooled intervals); returns it."""
    settings = settings or BootstrapConfig()
    seeds, summaries, replicates = seed_replicates(run, settings)
    pooled = S.pooled_over_seeds(replicates)
    first = summaries[0]
    sets = {}
    for name, result in first["sets"].items():
        metrics = {m: pooled.point.get(f"{name}/{m}") for m in result["metrics"]}
        sets[name] = {"role": result["role"], "rows": result["rows"], "metrics": metrics}
    summary = {
        "model": str(run), "scenario": first.get("scenario", "tofu"), "judges": first.get("judges", {}),
        "output_dir": str(run), "method": first.get("method"),
        "sets": sets, "skipped": first.get("skipped", []),
    }
    for key, value in aggregates(sets, summary["scenario"]).items():
        summary[key] = pooled.point.get(key, value["value"])
    flat_points = []
    for one in summaries:
        flat = {k: one.get(k) for k in NUMBERS if one.get(k) is not None}
        flat.update({f"{n}/{m}": v for n, r in one["sets"].items() for m, v in r["metrics"].items()})
        flat_points.append(flat)
    if all("FQ" in p for p in flat_points):
        summary["FQ"] = sum(p["FQ"] for p in flat_points) / len(flat_points)
    spread = S.seed_spread(flat_points)
    summary["seeds"] = {"seeds": seeds, "spread": spread}
    block = S.interval_summary(pooled, settings.level)
    block["method"] = ("percentile bootstrap of the mean over seeds: each seed's rows resampled with the same "
                       "row indices, the seeds' replicates averaged")
    summary["intervals"] = block
    write_summary(run, summary, SEEDS_SUMMARY)
    return summary


def evaluate_seeds(config, run: Path) -> dict:
    """``unlearnlm evaluate RUN`` on a seeds folder (``api.evaluate`` sends one here): every seed's
    run evaluated into seed_S/eval (one already evaluated is read back), then the aggregate."""
    from dataclasses import replace

    from .evaluate import evaluate_model, resolve_config

    for _, folder in seed_folders(run):
        if (folder / "eval" / EVAL_SUMMARY).exists():
            continue
        seed_config = replace(config, model=replace(config.model, name_or_path=str(folder / "model")),
                              output_dir=str(folder / "eval"))
        evaluate_model(resolve_config(seed_config, folder))
    return aggregate_seeds(run, config.bootstrap)


def format_seeds(summary: dict) -> str:
    """``MU 0.4120 ± 0.0130 (3 seeds) [0.38, 0.44]`` lines for the headline numbers."""
    spread = summary["seeds"]["spread"]
    bounds = interval_values(summary)
    level = S.levels_label([S.interval_level(summary)])
    lines = [f"over seeds {', '.join(str(s) for s in summary['seeds']['seeds'])}: mean ± sd"
             + (f", pooled {level} interval" if level else "")]
    for key in NUMBERS:
        if key in spread:
            interval = bounds.get(key)
            shown = f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
            lines.append(f"  {key:<10}{spread[key]['mean']:.4f} ± {spread[key]['sd']:.4f}{shown}")
    return "\n".join(lines)

