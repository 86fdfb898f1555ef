"""What the field's evaluation suite costs on top of the paper's, all read from the one inference pass.

In one process, on the same model and the same TOFU rows, with the same judges:

    paper   the paper's six metrics, MU and FE (``privacy.keep_token_values=false``, no holdout set)
    full    the full TOFU suite: the paper's six, MU, FE, FQ, the MIA scores LOSS, ZLib, Min-K%,
            Min-K%++ and Reference with their forget-vs-holdout AUCs, privleak, exact memorisation
            and extraction strength (a holdout set, and a retain model's evaluation for FQ,
            privleak and Reference: here an evaluation of the same model, made once, untimed)

The two modes alternate (paper, full, paper, full, ...) so that a change in the machine's load
hits both; the ratio is the full suite's total time over the paper suite's (target <= 1.2), in
wall time and in the process's CPU time (one torch thread by default: on a shared machine the CPU
time is what the load does not distort).

Model passes are counted, not estimated: a hook on the model counts every forward call and the
sequences it runs, and generation is counted per generated row. The same counters then run a
metric-by-metric design over a few rows, as evaluation frameworks that give each metric its own
evaluator do: every metric runs the inference it needs on its own (ROUGE, Token entropy, Cosine
and Entailment each generate; Probability, Truth ratio, every MIA score, EM and ES each run
their own loss pass; Reference also runs the reference model), and the sequence passes per row
of both designs are printed side by side (a generated row counts one pass, a loss forward one
pass per sequence it runs; one of our packed sequences holds a question's prompt and all its
answers).

    python benchmarks/bench_privacy_suite.py                   # 5 rows per set, one run per mode, a few minutes
    python benchmarks/bench_privacy_suite.py --rows 20 --repeats 3

Sets: TOFU forget01_perturbed (forget role) and retain_perturbed (retain role), the first --rows
rows of each; holdout: --rows rows of forget05_perturbed that are not in forget01 (the embedded
model never saw any TOFU author, so any unseen TOFU rows serve for timing). Needs TOFU in
../shared/data/tofu. Writes benchmarks/results/privacy_suite.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench_common import add_model_arguments, command_line, load_model_and_judges, machine

REPO = Path(__file__).resolve().parents[1]
TOFU = REPO.parent / "shared" / "data" / "tofu"
RESULTS = REPO / "benchmarks" / "results"
TARGET_RATIO = 1.2


class PassCounter:
    """Counts model forward calls and the sequences (batch rows) they run, and generated rows."""

    def __init__(self, model):
        self.forward_calls = self.sequences = self.generated_rows = 0
        self.counting = True
        self.generating = False
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if self.counting and not self.generating:
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.forward_calls += 1
            self.sequences += int(ids.shape[0]) if ids is not None else 0

    def reset(self):
        self.forward_calls = self.sequences = self.generated_rows = 0

    def snapshot(self) -> dict:
        return {"loss_forward_calls": self.forward_calls, "loss_sequences": self.sequences,
                "generated_rows": self.generated_rows}


def count_generation(counter: PassCounter):
    """Wrap inference.generate_answers so that each generated row counts as one pass (its
    forward steps are that row's decoding, not further passes over the data)."""
    from unlearnlm.evaluation import inference

    real = inference.generate_answers

    def counted(model, formatter, questions, *args, **kwargs):
        counter.generated_rows += len(questions)
        counter.generating = True
        try:
            return real(model, formatter, questions, *args, **kwargs)
        finally:
            counter.generating = False

    inference.generate_answers = counted


def write_sets(folder: Path, rows: int) -> dict[str, Path]:
    from unlearnlm.data.records import read_records_file

    forget = read_records_file(TOFU / "forget01_perturbed.json")
    known = {r["question"] for r in forget}
    holdout = [r for r in read_records_file(TOFU / "forget05_perturbed.json") if r["question"] not in known][:rows]
    path = folder / "holdout_rows" / "holdout.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({k: r[k] for k in ("question", "answer")}) + "\n" for r in holdout))
    return {"forget": TOFU / "forget01_perturbed.json", "retain": TOFU / "retain_perturbed.json",
            "holdout": path.parent}


def evaluation(args, sets, output, full: bool, retain_eval=None):
    from unlearnlm.config import EvaluateConfig, load_config

    settings = [f"model.name_or_path={args.model}", "scenario=custom", f"data.custom_forget=[{sets['forget']}]",
                f"data.custom_retain=[{sets['retain']}]", f"ds_size={args.rows}", f"output_dir={output}"]
    if full:
        settings += [f"data.holdout={sets['holdout']}"] + ([f"retain_eval={retain_eval}"] if retain_eval else [])
    else:
        settings += ["privacy.keep_token_values=false"]
    return load_config(EvaluateConfig, None, settings)


def run(args, sets, model, tokenizer, judges, counter, full, retain_eval, folder) -> dict:
    from unlearnlm.evaluation.evaluate import evaluate_model

    counter.reset()
    config = evaluation(args, sets, folder, full, retain_eval)
    quiet = lambda message: None  # noqa: E731
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = evaluate_model(config, model=model, tokenizer=tokenizer, judges=judges, log=quiet)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    rows = sum(summary["rows"].values())
    return {"mode": "full" if full else "paper", "seconds": seconds, "cpu_seconds": cpu_seconds, "rows": rows,
            "times": summary["times"],
            **counter.snapshot(), "summary": summary}


def per_metric_design(args, sets, model, tokenizer, counter, retain_eval) -> dict:
    """Each metric of the full suite with its own inference over the same rows, counted.

    What a metric-by-metric design runs: ROUGE, Token entropy, Cosine and Entailment each
    generate the answers; Probability, every MIA score, EM and ES each score the ground truths;
    the Truth ratio scores the paraphrased and perturbed answers; Reference also runs the
    reference model over the ground truths. FQ and privleak read the retain model's logged
    values there as here, so they run no pass of the evaluated model."""
    from dataclasses import replace

    import torch

    from unlearnlm.data.formatting import PromptFormat
    from unlearnlm.evaluation import inference
    from unlearnlm.evaluation.evaluate import build_sets, resolve_config

    config = evaluation(args, sets, tempfile.mkdtemp(), True, retain_eval)
    built = build_sets(resolve_config(replace(config, ds_size=args.count_rows)))
    formatter = PromptFormat(tokenizer)
    rows = sum(len(r) for _, r in built)
    truths = [(row["question"], row[s.ground_truth]) for s, set_rows in built for row in set_rows]
    counter.reset()
    with torch.inference_mode():
        for _ in ("rouge", "token_entropy", "cosine", "entailment"):
            questions = [row["question"] for s, set_rows in built if not s.loss_only for row in set_rows]
            inference.generate_answers(model, formatter, questions, config.max_length, config.generation_batch_size)
        for name in ("probability", "loss", "zlib", "min_k", "min_k_plus_plus", "exact_memorisation",
                     "extraction_strength", "reference"):
            details = None if name == "probability" else {p: None for p in truths}
            inference.sequence_losses(model, formatter, truths, config.loss_batch_size, token_details=details)
        inference.sequence_losses(model, formatter, truths, config.loss_batch_size)  # Reference: the reference model
        ratio_pairs = [(row["question"], answer) for s, set_rows in built if s.paraphrased and s.perturbed
                       for row in set_rows for answer in [row[s.paraphrased], *row[s.perturbed]]]
        inference.sequence_losses(model, formatter, ratio_pairs, config.loss_batch_size)  # Truth ratio
    return {"rows": rows, **counter.snapshot(),
            "passes_per_row": round((counter.generated_rows + counter.sequences) / rows, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5, help="rows of each set")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each mode, alternating")
    parser.add_argument("--count-rows", type=int, default=3, help="rows per set of the metric-by-metric count")
    add_model_arguments(parser, "a random hidden-128, 4-layer model (a smoke run)", RESULTS / "privacy_suite.json")
    args = parser.parse_args()
    if not (TOFU / "forget05_perturbed.json").exists():
        print(f"bench_privacy_suite: {TOFU} absent; this benchmark needs the shared TOFU data")
        return 1
    model, tokenizer, judges = load_model_and_judges(args)
    counter = PassCounter(model)
    count_generation(counter)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sets = write_sets(scratch, args.rows)
        # The "retain model's" evaluation (full suite, untimed; also the warm-up).
        retain = scratch / "retain_eval"
        run(args, sets, model, tokenizer, judges, counter, True, None, retain)
        runs = []
        for repeat in range(args.repeats):
            for full in (False, True):
                folder = scratch / f"run{repeat}-{'full' if full else 'paper'}"
                result = run(args, sets, model, tokenizer, judges, counter, full, retain, folder)
                print(f"  {result['mode']:<6} {result['seconds']:7.2f} s", file=sys.stderr, flush=True)
                runs.append(result)
        design = per_metric_design(args, sets, model, tokenizer, counter, retain)
    paper = [r for r in runs if r["mode"] == "paper"]
    full = [r for r in runs if r["mode"] == "full"]
    ratio = sum(r["seconds"] for r in full) / sum(r["seconds"] for r in paper)
    cpu_ratio = sum(r["cpu_seconds"] for r in full) / sum(r["cpu_seconds"] for r in paper)
    ours_passes = {r["mode"]: round((r["generated_rows"] + r["loss_sequences"]) / r["rows"], 2) for r in runs}
    last_full = full[-1]["summary"]
    numbers = {k: last_full.get(k) for k in ("MU", "FE", "FQ", "privleak", "AUC_loss", "AUC_zlib", "AUC_min_k",
                                             "AUC_min_k_plus_plus", "AUC_reference")}
    numbers.update({f"forget/{m}": last_full["sets"]["forget01_perturbed"]["metrics"][m]
                    for m in ("exact_memorisation", "extraction_strength")})

    print()
    print(f"{'mode':<8}{'wall s (each run)':>26}{'CPU s (each run)':>26}{'rows':>6}{'passes/row':>12}")
    for mode, results in (("paper", paper), ("full", full)):
        wall = ", ".join(f"{r['seconds']:.2f}" for r in results)
        cpu = ", ".join(f"{r['cpu_seconds']:.2f}" for r in results)
        print(f"{mode:<8}{wall:>26}{cpu:>26}{results[0]['rows']:>6}{ours_passes[mode]:>12}")
    print(f"\nfull suite / paper suite: wall time {ratio:.3f}x, CPU time {cpu_ratio:.3f}x (target <= {TARGET_RATIO}x)")
    print(f"sequence passes per row: one pass for the full suite {ours_passes['full']} "
          f"(paper alone {ours_passes['paper']}); metric by metric {design['passes_per_row']} "
          f"(counted on {design['rows']} rows)")
    print("full-suite numbers: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in numbers.items()))
    report = {
        "command": command_line(),
        "model": args.model,
        "data": f"TOFU forget01_perturbed + retain_perturbed, first {args.rows} rows each; holdout {args.rows} rows",
        "judges": judges.names(),
        "machine": machine(),
        "runs": [{k: v for k, v in r.items() if k != "summary"} for r in runs],
        "ratio_full_over_paper": ratio,
        "cpu_ratio_full_over_paper": cpu_ratio,
        "target_ratio": TARGET_RATIO,
        "passes_per_row": {"one_pass_full": ours_passes["full"], "one_pass_paper": ours_passes["paper"],
                           "metric_by_metric": design["passes_per_row"]},
        "metric_by_metric_count": design,
        "full_suite_numbers": numbers,
        "target_met": max(ratio, cpu_ratio) <= TARGET_RATIO,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
