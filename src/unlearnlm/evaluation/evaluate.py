"""``unlearnlm evaluate``: score a model on a scenario's evaluation sets (SPEC §5).

Order of work: resolve the config and check every data file (before any model is loaded),
load the judges, run one inference pass per set, judge every set's generations in one batched
call per judge, then compute the metrics from the records. Writes into ``output_dir``:

    records/SET.jsonl   one line per row: question, generation, ground truth, losses, every per-row value
    summary.json        the set metrics, MU / FE / TOFU MU / FQ, their bootstrap intervals, the judges' names,
                        skipped metrics, timings
    results.csv         one row per evaluation, appended (a header never repeats)
    config.yaml         the resolved config
and prints a table.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

from ..config import BootstrapConfig, EvalDataConfig, EvaluateConfig, ModelConfig, save_config
from ..data.records import read_records_file
from ..errors import UserError
from ..io import append_csv_row, atomic_write_json, atomic_write_jsonl
from . import metrics as M
from . import statistics as S
from .sets import EvalSet, load_set_rows, scenario_sets

SUMMARY = "summary.json"
RESULTS_CSV = "results.csv"
RECORDS_DIR = "records"
DEFAULT_SOURCE = {"tofu": "locuslab/TOFU"}
METRIC_TITLES = {"rouge": "ROUGE", "probability": "Prob", "truth_ratio": "TruthR", "token_entropy": "Entropy",
                 "cosine": "Cosine", "entailment": "Entail"}


# ---- configuration -----------------------------------------------------------------------------


def run_folder_of(path: str | Path) -> Optional[Path]:
    """The training run folder when ``path`` is one (it holds model/ and config.yaml)."""
    path = Path(path).expanduser()
    return path if (path / "model" / "config.json").exists() and (path / "config.yaml").exists() else None


def run_data_settings(run_folder: Optional[Path]) -> dict:
    """The ``data`` section of a training run's config.yaml (empty when there is none)."""
    if run_folder is None:
        return {}
    saved = yaml.safe_load((run_folder / "config.yaml").read_text(encoding="utf-8")) or {}
    data = saved.get("data") if isinstance(saved, dict) else None
    return data if isinstance(data, dict) else {}


def resolve_data(data: EvalDataConfig, scenario: str, run_data: Optional[dict] = None) -> EvalDataConfig:
    """Fill the empty data keys: the training run's own, else the scenario's defaults."""
    run_data = run_data or {}
    source = data.source or run_data.get("source") or DEFAULT_SOURCE.get(scenario)
    if not source and scenario == "real_world":
        raise UserError("scenario real_world needs data.source: a folder with neighbor_perturbed.json and forget_perturbed.json")
    forget = data.forget or run_data.get("forget")
    task_id = data.task_id
    if task_id is None:
        task_id = run_data.get("task_id")
        if task_id is None:
            task_id = ["1"] if scenario == "tofu" else []
    task_id = [] if [str(t).lower() for t in task_id] == ["all"] else [str(t) for t in task_id]
    return replace(data, source=source, forget=forget, task_id=task_id)


def resolve_config(config: EvaluateConfig, run_folder: Optional[Path] = None) -> EvaluateConfig:
    return replace(config, data=resolve_data(config.data, config.scenario, run_data_settings(run_folder)))


def build_sets(config: EvaluateConfig) -> list[tuple[EvalSet, list[dict]]]:
    """Every evaluation set with its rows, checked (a bad file fails here, before any model loads)."""
    data = config.data
    custom = [("forget", p) for p in data.custom_forget] + [("retain", p) for p in data.custom_retain]
    sets = scenario_sets(config.scenario, data.forget, custom)
    return [load_set_rows(s, data.source, data.task_id, config.ds_size) for s in sets]


# ---- judges ------------------------------------------------------------------------------------


class Judges:
    """The embedder and NLI judge of an evaluation, loaded once (None = unavailable)."""

    def __init__(self, embedder=None, nli=None):
        self.embedder = embedder
        self.nli = nli

    @classmethod
    def load(cls, config) -> "Judges":
        from .judges import load_embedder, load_nli_judge

        return cls(load_embedder(config.embedder), load_nli_judge(config.nli))

    def names(self) -> dict[str, Optional[str]]:
        return {"embedder": getattr(self.embedder, "name", None), "nli": getattr(self.nli, "name", None)}


def judge_records(
    sets: Sequence[tuple[EvalSet, list[dict]]], judges: Judges, config, times: dict[str, float]
) -> None:
    """Add ``cosine`` and ``nli_label`` to every record: one batched call per judge for all sets."""
    records = [(s, r) for s, rows in sets for r in rows]
    if not records:
        return
    if judges.embedder is not None:
        started = time.perf_counter()
        generations = judges.embedder.encode([r["generation"] for _, r in records], batch_size=config.embedder_batch_size)
        texts = judges.embedder.encode([r["cosine_text"] for _, r in records], batch_size=config.embedder_batch_size)
        for (_, record), value in zip(records, M.cosine_rows(generations, texts)):
            record["cosine"] = value
        times["embedder_s"] = time.perf_counter() - started
    if judges.nli is not None:
        started = time.perf_counter()
        # SPEC §5: forget (and real-world) sets: generation ⊨ truth; the others: truth ⊨ generation.
        premises = [r["generation"] if s.premise_is_generation else r["entailment_text"] for s, r in records]
        hypotheses = [r["entailment_text"] if s.premise_is_generation else r["generation"] for s, r in records]
        labels = judges.nli.predict(premises, hypotheses, batch_size=config.nli_batch_size)
        if len(labels) != len(records):
            raise RuntimeError(f"NLI judge {judges.nli.name} returned {len(labels)} labels for {len(records)} pairs")
        for (_, record), label in zip(records, labels):
            record["nli_label"] = label
        times["nli_s"] = time.perf_counter() - started


# ---- scoring -----------------------------------------------------------------------------------


def score_sets(sets: Sequence[tuple[EvalSet, list[dict]]]) -> dict[str, dict]:
    """Per-row values into each record, then {set: {role, rows, metrics}}."""
    results = {}
    for eval_set, records in sets:
        for record in records:
            record.update(M.row_values(record, normalised=eval_set.normalised_probability))
        results[eval_set.name] = {
            "role": eval_set.role,
            "rows": len(records),
            "metrics": M.set_metrics(records, forget_form=eval_set.forget_form),
        }
    return results


def skipped_metrics(set_results: dict[str, dict]) -> list[str]:
    """Which metric is missing on which sets, and why (the summary and the report say so)."""
    reasons = {
        "truth_ratio": "no paraphrased and perturbed answers",
        "cosine": "no sentence embedder",
        "entailment": "entailment unavailable: no NLI judge",
    }
    missing: dict[str, list[str]] = {}
    for name, result in set_results.items():
        for metric, value in result["metrics"].items():
            if value is None:
                missing.setdefault(metric, []).append(name)
    return [f"{metric} on {', '.join(sets)} ({reasons.get(metric, 'unavailable')})" for metric, sets in missing.items()]


def forget_ratios(sets: Sequence[tuple[EvalSet, list[dict]]]) -> Optional[list[float]]:
    """The forget set's R values (the set named ``forget``, else the first forget-role set)."""
    forget = [(s, rows) for s, rows in sets if s.role == "forget"]
    forget.sort(key=lambda item: item[0].name != "forget")
    if not forget or not forget[0][1] or forget[0][1][0].get("truth_ratio") is None:
        return None
    return [r["truth_ratio"] for r in forget[0][1]]


def read_retain_ratios(path: str) -> list[float]:
    """R values of a retain model's forget set: its evaluation folder or its forget records file."""
    target = Path(path).expanduser()
    if target.is_dir():
        target = target / RECORDS_DIR / f"{_file_name(_forget_set_name(target))}.jsonl"
    if not target.exists():
        raise UserError(f"retain_eval: {target} does not exist; run `unlearnlm evaluate` on the retain model first")
    rows = read_records_file(target)
    ratios = []
    for index, row in enumerate(rows, start=1):
        value = row.get("truth_ratio")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserError(f"retain_eval: {target}: line {index}: no numeric 'truth_ratio'")
        ratios.append(float(value))
    if not ratios:
        raise UserError(f"retain_eval: {target} holds no rows")
    return ratios


def _forget_set_name(folder: Path) -> str:
    """The forget set of an evaluation folder: ``forget``, else its first forget-role set."""
    sets = load_summary(folder).get("sets", {}) if (folder / SUMMARY).exists() else {}
    names = [n for n, r in sets.items() if r.get("role") == "forget"]
    return "forget" if "forget" in names or not names else names[0]


def aggregates(set_results: dict[str, dict], scenario: str) -> dict[str, dict]:
    result = {
        "MU": M.model_utility(set_results),
        "MU_retain": M.model_utility(set_results, roles=("retain",)),
        "FE": M.forget_efficacy(set_results),
    }
    if scenario == "tofu":
        result["TOFU_MU"] = M.tofu_model_utility(set_results)
    return result


def flat_numbers(summary: dict, with_intervals: bool = True) -> dict[str, Any]:
    """The summary's numbers as one flat row: MU, FE, ..., SET/METRIC (for CSV and tables), each
    followed by KEY_low and KEY_high when the summary holds its interval."""
    row = {key: summary[key] for key in ("MU", "MU_retain", "FE", "TOFU_MU", "FQ") if key in summary}
    for name, result in summary["sets"].items():
        for metric, value in result["metrics"].items():
            row[f"{name}/{metric}"] = value
    bounds = interval_values(summary) if with_intervals else {}
    if not bounds:
        return row
    with_bounds = {}
    for key, value in row.items():
        with_bounds[key] = value
        if bounds.get(key):
            with_bounds[f"{key}_low"], with_bounds[f"{key}_high"] = bounds[key]
    return with_bounds


# ---- intervals ---------------------------------------------------------------------------------


def scoring(scenario: str) -> S.Scoring:
    """The evaluation's scoring as the bootstrap calls it: the set metrics and the aggregates."""
    return S.Scoring(M.set_metrics, lambda results: {k: v["value"] for k, v in aggregates(results, scenario).items()})


def interval_values(summary: dict) -> dict[str, Optional[list[float]]]:
    """{MU, FE, ..., SET/METRIC: [low, high]} of a summary (empty without intervals)."""
    return (summary.get("intervals") or {}).get("values") or {}


def add_intervals(summary: dict, set_rows: Sequence[S.SetRows], settings: BootstrapConfig) -> Optional[S.Replicates]:
    """Bootstrap the summary's numbers from the sets' per-row records into summary["intervals"]."""
    if settings.samples == 0:
        summary.pop("intervals", None)
        return None
    replicates = S.bootstrap(set_rows, scoring(summary["scenario"]), settings.samples, settings.seed)
    forget = [s for s in set_rows if s.role == "forget"]
    forget.sort(key=lambda s: s.name != "forget")
    fq_rows = len(forget[0].rows) if "FQ" in summary and forget else None
    summary["intervals"] = S.interval_summary(replicates, settings.level, fq_rows)
    return replicates


def read_set_rows(folder: str | Path) -> list[S.SetRows]:
    """An evaluation folder's sets with their per-row records (records/SET.jsonl)."""
    folder = Path(folder)
    summary = load_summary(folder)
    set_rows = []
    for name, result in summary.get("sets", {}).items():
        path = folder / RECORDS_DIR / f"{_file_name(name)}.jsonl"
        if not path.exists():
            raise UserError(f"{path} is missing: intervals and paired comparisons need the per-row records")
        set_rows.append(S.SetRows(name, result.get("role", "retain"), read_records_file(path)))
    return set_rows


def bootstrap_folder(folder: str | Path, settings: BootstrapConfig) -> S.Replicates:
    """The replicates of an evaluation folder's numbers (from its records)."""
    summary = load_summary(folder)
    return S.bootstrap(read_set_rows(folder), scoring(summary.get("scenario", "tofu")), settings.samples, settings.seed)


def intervals_command(folder: str | Path, settings: BootstrapConfig) -> dict:
    """``unlearnlm intervals EVAL_DIR``: add (or recompute) the intervals of a finished evaluation."""
    folder = Path(folder)
    if not (folder / SUMMARY).exists() and (folder / "eval" / SUMMARY).exists():
        folder = folder / "eval"  # an unlearning run folder
    summary = load_summary(folder)
    add_intervals(summary, read_set_rows(folder), settings)
    atomic_write_json(folder / SUMMARY, summary)
    return summary


# ---- the command -------------------------------------------------------------------------------


def _device_model(config: ModelConfig):
    import torch

    from ..training.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(config)
    model = load_model(config)
    if torch.cuda.is_available():
        if config.dtype == "auto" and torch.cuda.is_bf16_supported():
            model = model.to(torch.bfloat16)
        model = model.to("cuda")
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("sdpa")  # fused attention where the architecture has it
        except (ValueError, ImportError):
            pass
    return model, tokenizer


def evaluate_model(
    config: EvaluateConfig,
    model=None,
    tokenizer=None,
    judges: Optional[Judges] = None,
    extra: Optional[dict] = None,
    csv_path: Optional[str | Path] = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluate ``model`` (or load ``config.model``) and write the output folder; returns the summary.

    ``extra`` adds columns to the CSV row and keys to the summary (e.g. {"epoch": 2});
    ``csv_path`` puts the CSV row elsewhere (e.g. one file for every epoch of a run).
    """
    from ..data.formatting import PromptFormat
    from .inference import InferenceTimes, infer_sets

    config = resolve_config(config)  # no-op when already resolved
    sets = build_sets(config)
    retain_ratios = read_retain_ratios(config.retain_eval) if config.retain_eval else None
    judges = judges if judges is not None else Judges.load(config.judges)
    if model is None:
        model, tokenizer = _device_model(config.model)
    elif tokenizer is None:
        raise ValueError("evaluate_model: a model was given without its tokenizer")
    formatter = PromptFormat(tokenizer)

    started = time.perf_counter()
    inference_times = InferenceTimes()
    records = infer_sets(
        model, formatter, sets, config.max_length, config.generation_batch_size, config.loss_batch_size,
        inference_times, log, config.group_by_length, config.pad_to, config.answer_logits_only,
        config.share_prompts,
    )
    judged_sets = [(eval_set, set_records) for (eval_set, _), set_records in zip(sets, records)]
    times = {"generation_s": inference_times.generation_s, "loss_s": inference_times.loss_s}
    judge_records(judged_sets, judges, config.judges, times)
    set_results = score_sets(judged_sets)
    times["total_s"] = time.perf_counter() - started

    summary: dict[str, Any] = {
        "model": config.model.name_or_path,
        "scenario": config.scenario,
        "judges": judges.names(),
        "output_dir": config.output_dir,
        **(extra or {}),
    }
    for key, value in aggregates(set_results, config.scenario).items():
        summary[key] = value["value"]
        summary[f"{key}_n_values"] = value["n_values"]
    skipped = skipped_metrics(set_results)
    ratios = forget_ratios(judged_sets)
    if retain_ratios is not None and ratios is not None:
        summary["FQ"] = M.forget_quality(ratios, retain_ratios)
    else:
        skipped.append("FQ (" + ("no retain_eval given" if retain_ratios is None else "no forget-set truth ratios") + ")")
    summary.update(sets=set_results, skipped=skipped, rows={n: r["rows"] for n, r in set_results.items()})
    started = time.perf_counter()
    add_intervals(summary, [S.SetRows(s.name, s.role, rows) for s, rows in judged_sets], config.bootstrap)
    times["bootstrap_s"] = time.perf_counter() - started
    summary.update(times={k: round(v, 3) for k, v in times.items()},
                   evaluated_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    write_outputs(config, judged_sets, summary, csv_path)
    log(format_table(summary))
    return summary


def write_outputs(config: EvaluateConfig, sets, summary: dict, csv_path: Optional[str | Path] = None) -> Path:
    output = Path(config.output_dir)
    for eval_set, records in sets:
        atomic_write_jsonl(output / RECORDS_DIR / f"{_file_name(eval_set.name)}.jsonl", records)
    save_config(config, output / "config.yaml")
    atomic_write_json(output / SUMMARY, summary)
    row = {
        "evaluated_at": summary["evaluated_at"],
        "model": summary["model"],
        "scenario": summary["scenario"],
        **{k: v for k, v in summary.items() if k in ("epoch", "step", "tag", "method", "task")},
        "embedder": summary["judges"]["embedder"] or "none",
        "nli": summary["judges"]["nli"] or "none",
        **flat_numbers(summary),
        "output_dir": summary["output_dir"],
    }
    append_csv_row(csv_path or output / RESULTS_CSV, row)
    return output


def _file_name(set_name: str) -> str:
    return set_name.replace(":", "_").replace("/", "_")


def _cell(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(summary: dict) -> str:
    """The printed table: one line per set (and its intervals beneath), then the aggregates with
    their intervals, the judges and what was skipped."""
    bounds = interval_values(summary)
    width = 11 if bounds else 9
    header = f"{'set':<16}{'role':<9}{'rows':>5}" + "".join(f"{METRIC_TITLES[m]:>{width}}" for m in M.METRICS)
    lines = [header, "-" * len(header)]
    for name, result in summary["sets"].items():
        cells = "".join(f"{_cell(result['metrics'][m]):>{width}}" for m in M.METRICS)
        lines.append(f"{name[:15]:<16}{result['role']:<9}{result['rows']:>5}{cells}")
        if bounds:
            cells = "".join(f"{_short_interval(bounds.get(f'{name}/{m}')):>{width}}" for m in M.METRICS)
            lines.append(f"{'':<30}{cells}")
    lines.append("-" * len(header))
    titles = {"MU": "Model Utility", "MU_retain": "MU (retain only)", "FE": "Forget Efficacy",
              "TOFU_MU": "TOFU Model Utility", "FQ": "Forget Quality (KS p)"}
    for key, title in titles.items():
        if key in summary:
            count = summary.get(f"{key}_n_values")
            interval = bounds.get(key)
            shown = f"  [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
            if key == "FQ" and bounds:
                shown = "  (no interval: a p-value)"
            counted = f"   ({count} values)" if count is not None else ""
            lines.append(f"{title:<24}{_cell(summary[key]):>9}{shown}{counted}")
    if bounds:
        block = summary["intervals"]
        lines.append(f"intervals: {block['level']:.0%} percentile bootstrap over each set's rows "
                     f"(B = {block['samples']}, seed {block['seed']})")
    judges = summary["judges"]
    lines.append(f"judges: embedder = {judges['embedder'] or 'none'}; nli = {judges['nli'] or 'none'}")
    if summary["skipped"]:
        lines.append("skipped: " + "; ".join(summary["skipped"]))
    return "\n".join(lines)


def _short_interval(interval: Optional[Sequence[float]]) -> str:
    """``[.39,.45]``: an interval in a 9-character table cell."""
    if not interval:
        return ""
    return "[" + ",".join(f"{x:.2f}".replace("0.", ".", 1) for x in interval) + "]"


def load_summary(folder: str | Path) -> dict:
    path = Path(folder) / SUMMARY
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read evaluation summary {path}: {err}") from None


def evaluate_command(config: EvaluateConfig, model_argument: Optional[str] = None) -> dict:
    """What ``unlearnlm evaluate MODEL`` does: a run folder is evaluated into RUN/eval with its data."""
    if model_argument and Path(model_argument).is_dir():
        from .seeds import evaluate_seeds, is_seeds_folder

        if is_seeds_folder(model_argument) and run_folder_of(model_argument) is None:
            summary = evaluate_seeds(config, Path(model_argument))
            return {**summary, "output_dir": model_argument}
    run_folder = run_folder_of(model_argument) if model_argument else None
    if model_argument:
        model_path = str(run_folder / "model") if run_folder else model_argument
        config = replace(config, model=replace(config.model, name_or_path=model_path))
        if run_folder and config.output_dir == EvaluateConfig.output_dir:  # not chosen by the user
            config = replace(config, output_dir=str(run_folder / "eval"))
    return evaluate_model(resolve_config(config, run_folder))

