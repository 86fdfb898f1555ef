"""``unlearnlm evaluate``: score a model on a scenario's evaluation sets (docs/formulas.md#metrics).

Order of work: resolve the config and check every data file (before any model is loaded),
load the judges, run one inference pass per set, judge every set's generations in one batched
call per judge, then compute the metrics from the records. Writes into ``output_dir``
(through evaluation/runs.py, the one module that reads and writes an evaluation folder):

    records/SET.jsonl   one line per row: question, generation, ground truth, losses, every per-row value
    summary.json        the set metrics, MU / FE / TOFU MU / FQ, the MIA AUCs and privleak, their
                        bootstrap intervals, the judges' names, skipped metrics (with why), timings
    results.csv         one row per evaluation, appended (a header never repeats)
    config.yaml         the resolved config
and prints a table.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..config import BootstrapConfig, EvalDataConfig, EvaluateConfig, UnlearnConfig
from ..data.records import read_records_file
from ..errors import UserError
from ..judges.loading import Judges
from ..tables import format_cell
from . import metrics as M
from . import statistics as S
from .runs import (
    EVAL_SUMMARY,
    forget_set_name,
    interval_values,
    load_summary,
    paths_resolved,
    read_evaluation_config,
    read_retain_ratios,
    read_set_rows,
    records_path,
    run_data_settings,
    run_folder_of,
    write_outputs,
    write_summary,
)
from .sets import HOLDOUT_SET, EvalSet, load_set_rows, scenario_sets

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = {"tofu": "locuslab/TOFU"}
METRIC_TITLES = {m.name: m.title for m in M.REGISTRY}


# ---- configuration -----------------------------------------------------------------------------


def resolve_data(data: EvalDataConfig, scenario: str, run_data: Optional[dict] = None) -> EvalDataConfig:
    """Fill the empty data keys: the training run's own, else the scenario's defaults."""
    run_data = run_data or {}
    source = data.source or run_data.get("source") or DEFAULT_SOURCE.get(scenario)
    if not source and scenario == "real_world":
        raise UserError("scenario real_world needs data.source: "
                        "a folder with neighbor_perturbed.json and forget_perturbed.json")
    forget = data.forget or run_data.get("forget")
    task_id = data.task_id
    if task_id is None:
        task_id = run_data.get("task_id")
        if task_id is None:
            task_id = ["1"] if scenario == "tofu" else []
    task_id = [] if [str(t).lower() for t in task_id] == ["all"] else [str(t) for t in task_id]
    return replace(data, source=source, forget=forget, task_id=task_id)


def resolve_config(config: EvaluateConfig, run_folder: Optional[Path] = None) -> EvaluateConfig:
    """The data keys filled in, and every local path absolute: the saved config.yaml means the
    same whichever folder a later command (intervals, attack, report) runs from."""
    config = replace(config, data=resolve_data(config.data, config.scenario, run_data_settings(run_folder)))
    return paths_resolved(config, lambda path: path)


def run_evaluation_config(run: UnlearnConfig, model_path: str, output_dir: str | Path,
                          task_id: Optional[list[str]] = None, scenario: Optional[str] = None) -> EvaluateConfig:
    """``run.evaluation`` (resolved) for a model of the unlearning run ``run``: its empty data keys
    take the run's own source and forget split, and the run's tasks (or ``task_id``); ``scenario``
    replaces the evaluation's own."""
    evaluation = run.evaluation if scenario is None else replace(run.evaluation, scenario=scenario)
    run_data = {"source": run.data.source, "forget": run.data.forget,
                "task_id": list(run.data.task_id) if task_id is None else task_id}
    return replace(evaluation, data=resolve_data(evaluation.data, evaluation.scenario, run_data),
                   model=replace(run.model, name_or_path=str(model_path)), output_dir=str(output_dir))


def build_sets(config: EvaluateConfig) -> list[tuple[EvalSet, list[dict]]]:
    """Every evaluation set with its rows, checked (a bad file fails here, before any model loads)."""
    data = config.data
    custom = [("forget", p) for p in data.custom_forget] + [("retain", p) for p in data.custom_retain]
    sets = scenario_sets(config.scenario, data.forget, custom, data.holdout, data.source)
    loaded = [load_set_rows(s, data.source, data.task_id, config.ds_size) for s in sets]
    check_holdout(loaded)
    return loaded


def check_prompt_lengths(formatter, sets: Sequence[tuple[EvalSet, list[dict]]], max_length: int) -> None:
    """A question whose prompt fills the generation budget would get no answer: refused."""
    for eval_set, rows in sets:
        for index, row in enumerate(rows):
            length = len(formatter.prompt_ids(row["question"]))
            if length >= max_length:
                line = row.get("_line")
                where = f"line {line}" if line is not None else f"row {index + 1}"
                raise UserError(f"evaluation set {eval_set.name}: {where}: the prompt alone is {length} tokens, "
                                f"so max_length={max_length} leaves no token to generate; raise max_length")


# ---- judges ------------------------------------------------------------------------------------


def judge_records(
    sets: Sequence[tuple[EvalSet, list[dict]]], judges: Judges, config, times: dict[str, float]
) -> None:
    """Add ``cosine`` and ``nli_label`` to every record: one batched call per judge for all sets."""
    records = [(s, r) for s, rows in sets if not s.loss_only for r in rows]
    if not records:
        return
    if judges.embedder is not None:
        started = time.perf_counter()
        generations = judges.embedder.encode([r["generation"] for _, r in records],
                                             batch_size=config.embedder_batch_size)
        texts = judges.embedder.encode([r["cosine_text"] for _, r in records], batch_size=config.embedder_batch_size)
        for (_, record), value in zip(records, M.cosine_rows(generations, texts)):
            record["cosine"] = value
        times["embedder_s"] = time.perf_counter() - started
    if judges.nli is not None:
        started = time.perf_counter()
        # docs/formulas.md#metrics: forget (and real-world) sets: generation ⊨ truth; the others: truth ⊨ generation.
        premises = [r["generation"] if s.premise_is_generation else r["entailment_text"] for s, r in records]
        hypotheses = [r["entailment_text"] if s.premise_is_generation else r["generation"] for s, r in records]
        labels = judges.nli.predict(premises, hypotheses, batch_size=config.nli_batch_size)
        if len(labels) != len(records):
            raise RuntimeError(f"NLI judge {judges.nli.name} returned {len(labels)} labels for {len(records)} pairs")
        for (_, record), label in zip(records, labels):
            record["nli_label"] = label
        times["nli_s"] = time.perf_counter() - started


# ---- scoring -----------------------------------------------------------------------------------


def set_kind(eval_set: EvalSet, privacy=None) -> M.SetKind:
    return M.SetKind(forget_form=eval_set.forget_form, normalised_probability=eval_set.normalised_probability,
                     **M.privacy_conventions(privacy))


def score_sets(sets: Sequence[tuple[EvalSet, list[dict]]], privacy=None) -> dict[str, dict]:
    """Per-row values into each record, then {set: {role, rows, metrics}}."""
    results = {}
    for eval_set, records in sets:
        kind = set_kind(eval_set, privacy)
        for record in records:
            record.update(M.row_values(record, kind=kind, loss_only=eval_set.loss_only))
        results[eval_set.name] = {
            "role": eval_set.role,
            "rows": len(records),
            "metrics": M.set_metrics(records, eval_set.forget_form, kind, eval_set.loss_only),
        }
        left_out = M.rows_left_out(records)
        if left_out:
            results[eval_set.name]["rows_left_out"] = left_out
    return results


def skipped_metrics(set_results: dict[str, dict]) -> list[str]:
    """Which metric is missing on which sets, and why (the summary and the report say so); the
    reasons are the registry's."""
    missing: dict[str, list[str]] = {}
    partial: list[str] = []
    for name, result in set_results.items():
        for metric, value in result["metrics"].items():
            if value is None:
                missing.setdefault(metric, []).append(name)
        for metric, count in result.get("rows_left_out", {}).items():
            partial.append(f"{metric} on {name}: {count} of {result['rows']} rows left out "
                           f"({M.BY_NAME[metric].missing})")
    reasons = [f"{metric} on {', '.join(sets)} ({M.BY_NAME[metric].missing})" for metric, sets in missing.items()]
    return reasons + partial


def forget_ratios(sets: Sequence[tuple[EvalSet, list[dict]]]) -> Optional[list[float]]:
    """The forget set's R values (the set named ``forget``, else the first forget-role set)."""
    forget = [(s, rows) for s, rows in sets if s.role == "forget"]
    forget.sort(key=lambda item: item[0].name != "forget")
    if not forget or not forget[0][1] or forget[0][1][0].get("truth_ratio") is None:
        return None
    return [r["truth_ratio"] for r in forget[0][1]]


def aggregates(set_results: dict[str, dict], scenario: str) -> dict[str, dict]:
    """MU, MU on retain only, FE (and TOFU MU) from the set results alone: the one function from
    set results to the utility and efficacy aggregates (the privacy ones need the rows:
    ``privacy_aggregates``)."""
    result = {
        "MU": M.model_utility(set_results),
        "MU_retain": M.model_utility(set_results, roles=("retain",)),
        "FE": M.forget_efficacy(set_results),
    }
    if scenario == "tofu":
        result["TOFU_MU"] = M.tofu_model_utility(set_results)
    return result


def forget_and_holdout(sets: Sequence[tuple[EvalSet, list[dict]]]) -> tuple[list[dict] | None, list[dict] | None]:
    """The forget set's records (the set named ``forget``, else the first forget-role set) and the holdout's."""
    forget = [(s, rows) for s, rows in sets if s.role == "forget"]
    forget.sort(key=lambda item: item[0].name != "forget")
    holdout = [rows for s, rows in sets if s.role == "holdout"]
    return (forget[0][1] if forget else None), (holdout[0] if holdout else None)


def privacy_aggregates(forget_rows: Sequence[dict] | None, holdout_rows: Sequence[dict] | None,
                       retain_aucs: dict | None, retain_note: str) -> tuple[dict[str, Any], list[str]]:
    """The MIA AUC of every score (forget vs holdout) and privleak against the retain model's
    Min-K% AUC (or 0.5, said out loud), from the scored rows; returns (numbers, skipped reasons)."""
    if not forget_rows or not holdout_rows:
        return {}, ["MIA AUCs and privleak (" + ("no holdout set: set data.holdout" if not holdout_rows
                                               else "no forget set") + ")"]
    too_few = M.P.auc_rows_problem(len(forget_rows), len(holdout_rows))
    if too_few:
        return {}, [f"MIA AUCs and privleak ({too_few})"]
    aucs = M.mia_aucs(forget_rows, holdout_rows)
    numbers: dict[str, Any] = {f"AUC_{name}": value for name, value in aucs.items()}
    skipped = [f"AUC_{name} ({M.BY_NAME[name].missing})" for name in M.MIA_SCORES if name not in aucs]
    if M.PRIVLEAK_SCORE in aucs:
        reference = (retain_aucs or {}).get(M.PRIVLEAK_SCORE)
        value, fallback = M.P.privleak(aucs[M.PRIVLEAK_SCORE], reference)
        if value is None:
            return numbers, skipped + [f"privleak ({M.P.PRIVLEAK_UNDEFINED})"]
        numbers["privleak"] = value
        numbers["privleak_reference_auc"] = reference
        numbers["privleak_reference"] = (f"A_R = 0.5 assumed ({retain_note}): privleak is not against a retain model"
                                         if fallback else "the retain model's Min-K% AUC")
    return numbers, skipped


def check_holdout(sets: Sequence[tuple[EvalSet, list[dict]]]) -> None:
    """A holdout sharing questions with the forget set would score rows against themselves (every
    MIA AUC 0.5, privleak its best): refused, before any model loads."""
    forget, holdout = forget_and_holdout(sets)
    if not forget or not holdout:
        return
    forget_questions = {" ".join(str(r["question"]).split()).lower() for r in forget}
    shared = [r["question"] for r in holdout if " ".join(str(r["question"]).split()).lower() in forget_questions]
    if shared:
        raise UserError(f"data.holdout shares {len(shared)} of its {len(holdout)} questions with the forget set "
                        f"(e.g. '{shared[0][:60]}'): the MIA AUCs and privleak need rows no model trained on")


def retain_model_aucs(config: EvaluateConfig) -> tuple[dict | None, str]:
    """The retain model's MIA AUCs, recomputed from its evaluation's forget and holdout records
    with this evaluation's settings; (None, why) when they cannot be."""
    if not config.retain_eval:
        return None, "no retain_eval given"
    folder = Path(config.retain_eval).expanduser()
    if not folder.is_dir():
        return None, "retain_eval is a records file, not an evaluation folder"
    forget_file = records_path(folder, forget_set_name(folder))
    holdout_file = records_path(folder, HOLDOUT_SET)
    if not forget_file.exists() or not holdout_file.exists():
        return None, f"retain_eval {folder} has no forget and holdout records"
    kind = M.SetKind(**M.privacy_conventions(config.privacy))
    rows = []
    for path in (forget_file, holdout_file):
        records = read_records_file(path)
        for record in records:
            record.update(M.row_values(record, kind=kind, loss_only=True))
        rows.append(records)
    aucs = M.mia_aucs(*rows)
    if M.PRIVLEAK_SCORE not in aucs:
        return None, f"retain_eval {folder} has no per-token values"
    return aucs, ""


def attach_reference_losses(sets: Sequence[tuple[EvalSet, list[dict]]], folder: str | None) -> None:
    """``reference_loss`` of every row the reference model's evaluation scored (same set, same
    question and answer): the Reference MIA score then needs no forward of that model."""
    if not folder or not Path(folder).expanduser().is_dir():
        return
    for eval_set, records in sets:
        path = records_path(Path(folder).expanduser(), eval_set.name)
        if not path.exists():
            continue
        losses = {(r.get("question"), r.get("ground_truth")): r.get("truth_loss") for r in read_records_file(path)}
        for record in records:
            value = losses.get((record["question"], record["ground_truth"]))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                record["reference_loss"] = float(value)


def attach_gradient_norms(model, formatter, sets: Sequence[tuple[EvalSet, list[dict]]], p: str) -> None:
    """``grad_norm`` of every forget and holdout row (one backward each)."""
    from .inference import gradient_norms

    order = float("inf") if p == "inf" else float(p)
    for eval_set, records in sets:
        if eval_set.role in ("forget", "holdout"):
            pairs = [(r["question"], r["ground_truth"]) for r in records]
            for record, value in zip(records, gradient_norms(model, formatter, pairs, order), strict=True):
                record["grad_norm"] = value


# ---- intervals ---------------------------------------------------------------------------------


def scoring(scenario: str, retain_aucs: Optional[dict] = None) -> S.Scoring:
    """The evaluation's scoring as the bootstrap calls it: the set metrics, the aggregates of the
    set results, and the MIA AUCs and privleak of the forget and holdout rows (the retain model's
    AUC, privleak's reference, is a fixed number: its rows are not resampled)."""

    def privacy(sets: Sequence[S.SetRows]) -> dict[str, float]:
        forget = sorted((s for s in sets if s.role == "forget"), key=lambda s: s.name != "forget")
        holdout = [s for s in sets if s.role == "holdout"]
        numbers, _ = privacy_aggregates(forget[0].rows if forget else None, holdout[0].rows if holdout else None,
                                        retain_aucs, "")
        return {k: v for k, v in numbers.items() if k.startswith("AUC_") or k == "privleak"}

    return S.Scoring(M.set_metrics, lambda results: {k: v["value"] for k, v in aggregates(results, scenario).items()},
                     privacy)


def add_intervals(summary: dict, set_rows: Sequence[S.SetRows], settings: BootstrapConfig,
                  retain_aucs: Optional[dict] = None) -> Optional[S.Replicates]:
    """Bootstrap the summary's numbers from the sets' per-row records into summary["intervals"]."""
    if settings.samples == 0:
        summary.pop("intervals", None)
        return None
    replicates = S.bootstrap(set_rows, scoring(summary.get("scenario", "tofu"), retain_aucs), settings.samples,
                             settings.seed)
    forget = [s for s in set_rows if s.role == "forget"]
    forget.sort(key=lambda s: s.name != "forget")
    fq_rows = len(forget[0].rows) if "FQ" in summary and forget else None
    summary["intervals"] = S.interval_summary(replicates, settings.level, fq_rows)
    return replicates


def folder_scoring(folder: str | Path) -> S.Scoring:
    """The scoring of an evaluation folder's own numbers: its scenario, and privleak against its
    own reference (the retain model's AUC its summary used, else 0.5), so a bootstrap of its
    records (intervals, paired comparisons, seeds) gives the summary's privleak, from any folder."""
    return scoring(load_summary(folder).get("scenario", "tofu"), _saved_retain_aucs(folder))


def _saved_retain_aucs(folder: Path) -> Optional[dict]:
    """The retain model's MIA AUCs for an evaluation folder, read through its saved config: the
    reference its summary's privleak was computed against. When the summary's privleak is the
    retain model's and they cannot be recomputed now, that is an error, not a silent A_R = 0.5."""
    folder = Path(folder)
    summary = load_summary(folder)
    if not (folder / "config.yaml").exists():
        aucs, why = None, f"{folder / 'config.yaml'} is missing"
    else:
        aucs, why = retain_model_aucs(read_evaluation_config(folder))
    if aucs is None and summary.get("privleak_reference_auc") is not None:
        raise UserError(f"{folder}: its privleak is against a retain model's AUC, which cannot be recomputed now "
                        f"({why}); the privleak interval would be against another reference")
    return aucs


def intervals_command(folder: str | Path, settings: BootstrapConfig) -> dict:
    """``unlearnlm intervals EVAL_DIR``: add (or recompute) the intervals of a finished evaluation
    (``settings`` validated by the caller: api.intervals)."""
    folder = Path(folder)
    if not (folder / EVAL_SUMMARY).exists() and (folder / "eval" / EVAL_SUMMARY).exists():
        folder = folder / "eval"  # an unlearning run folder
    summary = load_summary(folder)
    add_intervals(summary, read_set_rows(folder), settings, _saved_retain_aucs(folder))
    write_summary(folder, summary)
    return summary


# ---- the command -------------------------------------------------------------------------------


def evaluate_model(
    config: EvaluateConfig,
    model=None,
    tokenizer=None,
    judges: Optional[Judges] = None,
    extra: Optional[dict] = None,
    csv_path: Optional[str | Path] = None,
    log: Optional[Callable[[str], None]] = None,
) -> dict:
    """Evaluate ``model`` (or load ``config.model``) and write the output folder; returns the summary.

    ``extra`` adds columns to the CSV row and keys to the summary (e.g. {"epoch": 2});
    ``csv_path`` puts the CSV row elsewhere (e.g. one file for every epoch of a run).
    """
    from ..training.models import load_for_inference, load_prompt_format, load_tokenizer, refuse_broken_model
    from . import open_unlearning as OU
    from .inference import InferenceTimes, infer_sets
    from .shards import from_main, infer_across_processes, parameters_sharded, processes

    log = log or logger.info
    group = processes()  # under torchrun: every process evaluates a share of the rows (evaluation/shards.py)
    config = resolve_config(config)  # no-op when already resolved
    sets = build_sets(config)
    suite = config.suite == OU.SUITE
    retain_ratios = read_retain_ratios(config.retain_eval) if config.retain_eval and not OU.is_foreign(
        config.retain_eval) else None
    suite_retain = OU.retain_logs(config.retain_eval) if suite else None
    retain_aucs = retain_model_aucs(config)
    if model is not None and tokenizer is None:
        raise ValueError("evaluate_model: a model was given without its tokenizer")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.model)
    formatter = load_prompt_format(config.model, tokenizer)
    if suite:
        formatter = type(formatter)(tokenizer, spec=OU.suite_format(formatter.spec))
    else:  # the suite's budget counts new tokens only
        check_prompt_lengths(formatter, sets, config.max_length)
    # Every process judges the generations of its own shard (docs/performance.md#multi-gpu: cheaper
    # than judging every row on the main process).
    judges = judges if judges is not None else Judges.load(config.judges)
    if model is None:
        model, tokenizer = load_for_inference(config.model, tokenizer)
    refuse_broken_model(model, formatter.prompt_ids(sets[0][1][0]["question"]), config.model.name_or_path)

    if config.privacy.grad_norm_p and group.count > 1 and parameters_sharded(model):
        raise UserError("privacy.grad_norm_p needs the whole model on the main process; it cannot run on a model "
                        "whose parameters are sharded over processes (FSDP, ZeRO-3): evaluate the saved model")

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    inference_model = OU.PadMaskedModel(model, pad_id) if suite else model  # the suite's mask: token != pad

    def infer(shard_sets):
        inference_times = InferenceTimes()
        shard_records = infer_sets(
            inference_model, formatter, shard_sets, config.max_length, config.generation_batch_size,
            config.loss_batch_size, inference_times, log, config.group_by_length, config.pad_to,
            config.answer_logits_only, config.share_prompts and not suite, config.privacy.keep_token_values,
            OU.MAX_NEW_TOKENS if suite else None,
        )
        shard_times = {"generation_s": inference_times.generation_s, "loss_s": inference_times.loss_s}
        judge_records([(s, r) for (s, _), r in zip(shard_sets, shard_records)], judges, config.judges, shard_times)
        return shard_records, shard_times

    started = time.perf_counter()
    records, shard_times, split = infer_across_processes(infer, model, sets, group)
    if not group.is_main:
        return from_main(None, group)
    judged_sets = [(eval_set, set_records) for (eval_set, _), set_records in zip(sets, records)]
    # Each step's slowest process: what the evaluation waited for.
    steps = dict.fromkeys(key for t in shard_times for key in t)
    times = {key: max(t[key] for t in shard_times if key in t) for key in steps}
    if config.privacy.grad_norm_p:
        grad_started = time.perf_counter()
        attach_gradient_norms(model, formatter, judged_sets, config.privacy.grad_norm_p)
        times["grad_norm_s"] = time.perf_counter() - grad_started
    attach_reference_losses(judged_sets, config.privacy.reference_eval or config.retain_eval)
    set_results = score_sets(judged_sets, config.privacy)
    times["total_s"] = time.perf_counter() - started

    summary: dict[str, Any] = {
        "model": config.model.name_or_path,
        "scenario": config.scenario,
        "judges": judges.names(),
        "output_dir": config.output_dir,
        **(extra or {}),
        "evaluated_by": split,  # how many processes, and how many rows each took
    }
    for key, value in aggregates(set_results, config.scenario).items():
        summary[key] = value["value"]
        summary[f"{key}_n_values"] = value["n_values"]
    skipped = skipped_metrics(set_results)
    ratios = forget_ratios(judged_sets)
    if retain_ratios is not None and ratios is not None:
        summary["FQ"] = M.forget_quality(ratios, retain_ratios)
    else:
        why = "no retain_eval given" if retain_ratios is None else "no forget-set truth ratios"
        skipped.append(f"FQ ({why})")
    privacy_numbers, privacy_skipped = privacy_aggregates(*forget_and_holdout(judged_sets), *retain_aucs)
    summary.update(privacy_numbers)
    skipped += privacy_skipped
    summary["directions"] = directions()
    summary.update(sets=set_results, skipped=skipped, rows={n: r["rows"] for n, r in set_results.items()})
    started = time.perf_counter()
    add_intervals(summary, [S.SetRows(s.name, s.role, rows) for s, rows in judged_sets], config.bootstrap,
                  retain_aucs[0])
    times["bootstrap_s"] = time.perf_counter() - started
    summary.update(times={k: round(v, 3) for k, v in times.items()},
                   evaluated_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    if suite:
        suite_logs = OU.tofu_logs([(s.name, rows) for s, rows in judged_sets], formatter, suite_retain)
        summary["open_unlearning"] = OU.summary_of(suite_logs)

    write_outputs(config, judged_sets, summary, csv_path)
    log(format_table(summary))
    if suite:
        OU.write_results(config.output_dir, suite_logs)
        log(OU.format_numbers(summary["open_unlearning"]))
    return from_main(summary, group)


_ARROWS = {"higher": "higher", "lower": "lower", "0": "closest to 0", "0.5": "closest to 0.5"}


def directions() -> dict[str, str]:
    """Which way is better, for every metric and aggregate (written into the summary)."""
    result = {}
    for m in M.REGISTRY:
        result[m.name] = f"{m.knowledge} = the set better known (better on retain-like sets, worse on forget sets)"
    result.update({a.name: _ARROWS[a.better] for a in M.AGGREGATES})
    return result


def format_table(summary: dict) -> str:
    """The printed table: one block of set metrics per registry group (each set's intervals on the
    line beneath it), then the aggregates with their intervals, the judges and what was skipped."""
    bounds = interval_values(summary)
    width = 11 if bounds else 9
    lines: list[str] = []
    for group in dict.fromkeys(m.group for m in M.REGISTRY):
        names = [m.name for m in M.REGISTRY if m.group == group
                 and any(m.name in r["metrics"] for r in summary["sets"].values())]
        if group != "paper":
            names = [n for n in names if any(r["metrics"].get(n) is not None for r in summary["sets"].values())]
        if not names:
            continue
        header = f"{'set':<16}{'role':<9}{'rows':>5}" + "".join(f"{METRIC_TITLES[m]:>{width}}" for m in names)
        lines += ([""] if lines else []) + [header, "-" * len(header)]
        for name, result in summary["sets"].items():
            if not any(m in result["metrics"] for m in names):
                continue
            cells = "".join(f"{format_cell(result['metrics'].get(m)):>{width}}" for m in names)
            lines.append(f"{name[:15]:<16}{result['role']:<9}{result['rows']:>5}{cells}")
            if bounds:
                cells = "".join(f" {S.short_interval(bounds.get(f'{name}/{m}')):>{width - 1}}" for m in names)
                if cells.strip():
                    lines.append(f"{'':<30}{cells}")
        lines.append("-" * len(header))
    for aggregate in M.AGGREGATES:
        if aggregate.name in summary:
            count = summary.get(f"{aggregate.name}_n_values")
            interval = bounds.get(aggregate.name)
            shown = f"  [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
            if aggregate.name == "FQ" and bounds:
                shown = "  (no interval: a p-value)"
            lines.append(f"{aggregate.title:<24}{format_cell(summary[aggregate.name]):>9}{shown}"
                         + (f"   ({count} values)" if count is not None else "")
                         + f"   [{_ARROWS[aggregate.better]} is better]")
    if "privleak" in summary:
        lines.append(f"privleak reference: {summary['privleak_reference']}")
    if bounds:
        block = summary["intervals"]
        lines.append(f"intervals: {S.percent(block['level'])} percentile bootstrap over each set's rows "
                     f"(B = {block['samples']}, seed {block['seed']})")
        for name, why in (block.get("undefined") or {}).items():
            lines.append(f"no interval on {name}: {why}")
    judges = summary["judges"]
    lines.append(f"judges: embedder = {judges['embedder'] or 'none'}; nli = {judges['nli'] or 'none'}")
    if summary["skipped"]:
        lines.append("skipped: " + "; ".join(summary["skipped"]))
    return "\n".join(lines)


def evaluate_command(config: EvaluateConfig, model_argument: Optional[str] = None) -> dict:
    """What ``unlearnlm evaluate MODEL`` does for a model or a run folder: a run folder is evaluated
    into RUN/eval with its data (a folder of seeds' runs: ``seeds.evaluate_seeds``; ``api.evaluate``
    chooses)."""
    run_folder = run_folder_of(model_argument) if model_argument else None
    if model_argument:
        model_path = str(run_folder / "model") if run_folder else model_argument
        config = replace(config, model=replace(config.model, name_or_path=model_path))
        if run_folder and config.output_dir == EvaluateConfig.output_dir:  # not chosen by the user
            config = replace(config, output_dir=str(run_folder / "eval"))
    return evaluate_model(resolve_config(config, run_folder))

