"""Evaluation speed, side by side: unlearnlm's evaluation against a faithful reference-style mode.

Both modes run ``evaluate_model`` (the code of ``unlearnlm evaluate``) on the same model, the same
TOFU rows and the same judges, in one process; the reference-style mode switches our
optimisations off and does what the reference implementation does:

    reference  batches in set order (30 rows), every loss sequence padded to 500 tokens and
               projected onto the vocabulary at every position, eager attention, the embedder
               called one text at a time, the NLI judge in batches of 30
    ours       batches grouped by length, per-batch padding, vocabulary logits only at answer
               positions, each question's prompt run once for all its answers, SDPA attention,
               batched judges (the default config)

A third mode, whole-sequences, is ours with one whole sequence per answer (share_prompts=false);
a fourth, one-generation-batch, ours with generation_batch_size=256 (every question in one batch).
Each mode other than ours is also compared with ours (generations, metrics, speed-up).

Sets: TOFU forget01 (perturbed; forget role) and retain_perturbed (retain role), the first
--rows rows of each. Per mode and phase: seconds and rows per second; then every metric in
both modes, which must agree (|difference| <= 1e-6), and whether each row's generation is the
same. Phases:

    generation  greedy answers, at most 200 tokens in all per row (left-padded, KV cache)
    losses      ground truth + paraphrased + 5 perturbed answers per row (7 sequences a row)
    embedder    the generation and the cosine text of each row (2 texts a row)
    nli judge   one (premise, hypothesis) pair a row
    bootstrap   the intervals: B resamples of every set's rows, each scored as the evaluation

    python benchmarks/bench_evaluation.py                        # both modes, 20 + 20 rows, ~15 min
    python benchmarks/bench_evaluation.py --modes ours --rows 100   # our speed alone
    python benchmarks/bench_evaluation.py --modes ours,whole-sequences   # what sharing prompts saves
    python benchmarks/bench_evaluation.py --workload tofu200 --modes ours,one-generation-batch --threads 2
    python benchmarks/bench_evaluation.py --fast                 # a random 4-layer model, ~1 min

Rows per second of each stage on other workloads (--workload; their own result files):

    python benchmarks/bench_evaluation.py --workload tofu200 --modes ours --threads 2   # 200 TOFU-shaped rows
    python benchmarks/bench_evaluation.py --workload demo --modes ours --model <the demo's target>/model

Workers use one torch thread by default: on a shared 2-core machine OpenMP's spin-waiting makes
two threads many times slower than one as soon as another process competes for the cores.
Needs TOFU in ../shared/data/tofu (relative to the repository); exits with a message without it.
Writes benchmarks/results/evaluation.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_common import add_model_arguments, command_line, load_model_and_judges, machine

REPO = Path(__file__).resolve().parents[1]
TOFU = REPO.parent / "shared" / "data" / "tofu"
SETS = {"forget": TOFU / "forget01_perturbed.json", "retain": TOFU / "retain_perturbed.json"}
RESULTS = REPO / "benchmarks" / "results"
EQUAL_METRIC = 1e-6
TARGET_SPEEDUP = 5.0

# Mode -> (evaluation config overrides, attention implementation).
MODES = {
    "ours": ([], "sdpa"),
    # Ours with every loss sequence run whole (a question's prompt once per answer).
    "whole-sequences": (["share_prompts=false"], "sdpa"),
    # Ours with every question of an evaluation in one generation batch (tofu200: 160 questions).
    "one-generation-batch": (["generation_batch_size=256"], "sdpa"),
    "reference": ([
        "group_by_length=false", "pad_to=500", "answer_logits_only=false", "generation_batch_size=30",
                   "loss_batch_size=30",
        "judges.embedder_batch_size=1", "judges.nli_batch_size=30",
    ], "eager"),
}
PHASES = (("generation", "generation_s"), ("losses", "loss_s"), ("embedder", "embedder_s"),
          ("nli judge", "nli_s"), ("bootstrap", "bootstrap_s"), ("total", "total_s"))


def workload_settings(args, scratch: Path) -> tuple[list[str], str]:
    """The evaluation's data settings for ``args.workload`` and a description of its rows.

    pair     TOFU forget01 and retain_perturbed as custom sets (the side-by-side comparison)
    tofu200  a TOFU-shaped evaluation: forget01, retain, real authors, world facts and a holdout
             set (forget10 rows outside forget01: loss pass only), ``--rows`` each (40: 200 rows)
    demo     the demo's evaluation (``unlearnlm demo``'s world, sets, holdout authors and ds_size)
    """
    if args.workload == "pair":
        return ([f"data.custom_forget=[{SETS['forget']}]", f"data.custom_retain=[{SETS['retain']}]",
                 "scenario=custom", f"ds_size={args.rows}"],
                f"TOFU forget01_perturbed + retain_perturbed, first {args.rows} rows each")
    if args.workload == "tofu200":
        forget01 = {json.loads(line)["question"] for line in SETS["forget"].open()}
        others = [line for line in (TOFU / "forget10_perturbed.json").open()
                  if json.loads(line)["question"] not in forget01]
        holdout = scratch / "holdout.json"
        holdout.write_text("".join(others[: args.rows]))
        return ([f"data.source={TOFU}", "data.forget=forget01", "scenario=tofu", f"ds_size={args.rows}",
                 f"data.holdout={holdout}"],
                f"TOFU forget01, retain, real authors, world facts and {args.rows} holdout rows (forget10 outside "
                f"forget01), {args.rows} rows each")
    from unlearnlm.config import DemoConfig
    from unlearnlm.scenarios.demo import build_holdout, build_world
    from unlearnlm.training.models import cache_dir

    demo = DemoConfig()
    world, held = build_world(demo, cache_dir() / "demo"), build_holdout(demo, cache_dir() / "demo")
    return ([f"data.source={world}", f"data.forget={demo.forget_split}", "data.task_id=[1]", "scenario=tofu",
             f"ds_size={demo.evaluation.ds_size}", f"data.holdout={held}"],
            f"the demo's evaluation: its world ({world.name}), forget task 1, ds_size {demo.evaluation.ds_size}, "
            "holdout authors")


def run_mode(mode: str, args, model, tokenizer, judges) -> dict:
    from unlearnlm.config import EvaluateConfig, load_config
    from unlearnlm.evaluation.evaluate import evaluate_model

    overrides, attention = MODES[mode]
    model.set_attn_implementation(attention)
    with tempfile.TemporaryDirectory() as output:
        data, args.data_description = workload_settings(args, Path(output))
        config = load_config(EvaluateConfig, None, [
            f"model.name_or_path={args.model}", *data, f"output_dir={output}/eval", *overrides,
        ])
        log = lambda message: print(f"  [{mode}] {message}", file=sys.stderr, flush=True)  # noqa: E731
        summary = evaluate_model(config, model=model, tokenizer=tokenizer, judges=judges, log=log)
        records = {}
        for path in sorted((Path(output) / "eval" / "records").glob("*.jsonl")):
            records[path.stem] = [json.loads(line) for line in path.open()]
    rows = sum(summary["rows"].values())
    return {
        "mode": mode,
        "attention": attention,
        "overrides": overrides,
        "rows": rows,
        "seconds": {key: summary["times"].get(key) for _, key in PHASES},
        "rows_per_s": {phase: round(rows / summary["times"][key], 3) if summary["times"].get(key) else None
                       for phase, key in PHASES},
        "metrics": {name: result["metrics"] for name, result in summary["sets"].items()},
        "aggregates": {k: summary.get(k) for k in ("MU", "FE", "MU_retain", "TOFU_MU")},
        "records": records,
    }


def compare(ours: dict, reference: dict) -> dict:
    """Largest metric difference and per-row agreement between the two modes."""
    differences = []
    for set_name, metrics in ours["metrics"].items():
        for metric, value in metrics.items():
            other = reference["metrics"][set_name].get(metric)
            if isinstance(value, (int, float)) and isinstance(other, (int, float)):
                differences.append((abs(value - other), f"{set_name}/{metric}"))
    same_generations = total = 0
    loss_diff = 0.0
    for set_name, rows in ours["records"].items():
        for a, b in zip(rows, reference["records"][set_name]):
            total += 1
            same_generations += a["generation"] == b["generation"]
            pairs = [(a["truth_loss"], b["truth_loss"]), (a["paraphrased_loss"], b["paraphrased_loss"]),
                     *zip(a["perturbed_losses"], b["perturbed_losses"])]
            loss_diff = max([loss_diff] + [abs(x - y) for x, y in pairs if x is not None and y is not None])
    largest = max(differences) if differences else (0.0, "-")
    return {
        "max_metric_abs_diff": largest[0], "at": largest[1], "metrics_compared": len(differences),
        "same_generations": same_generations, "rows": total, "max_row_loss_abs_diff": loss_diff,
        "speedup_total": reference["seconds"]["total_s"] / ours["seconds"]["total_s"],
        "speedup_by_phase": {phase: reference["seconds"][key] / ours["seconds"][key]
                             for phase, key in PHASES if ours["seconds"].get(key) and reference["seconds"].get(key)},
    }


def print_tables(results: list[dict], comparison: dict | None) -> None:
    print()
    print(f"{'phase':<12}" + "".join(f"{r['mode'] + ' s':>14}{r['mode'] + ' rows/s':>18}" for r in results)
          + (f"{'speed-up':>10}" if comparison else ""))
    for phase, key in PHASES:
        line = f"{phase:<12}"
        for r in results:
            seconds = r["seconds"].get(key)
            line += f"{seconds:>14.2f}{r['rows_per_s'][phase]:>18.3f}" if seconds else f"{'-':>14}{'unavailable':>18}"
        if comparison:
            speedup = comparison["speedup_by_phase"].get(phase)
            line += f"{speedup:>9.2f}x" if speedup else f"{'-':>10}"
        print(line)
    print()
    names = [(s, m) for s, metrics in results[0]["metrics"].items() for m in metrics]
    print(f"{'metric':<28}" + "".join(f"{r['mode']:>14}" for r in results))
    for set_name, metric in names:
        values = [r["metrics"][set_name].get(metric) for r in results]
        print(f"{set_name + '/' + metric:<28}" + "".join(f"{v:>14.8f}" if isinstance(v,
            float) else f"{str(v):>14}" for v in values))
    if comparison:
        print(f"\nlargest metric difference {comparison['max_metric_abs_diff']:.2e} ({comparison['at']}); "
              f"identical generations {comparison['same_generations']}/{comparison['rows']}; "
              f"largest per-row loss difference {comparison['max_row_loss_abs_diff']:.2e}; "
              f"total speed-up {comparison['speedup_total']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="pair", choices=("pair", "tofu200", "demo"),
                        help="pair: TOFU forget + retain side by side; tofu200: a TOFU-shaped evaluation of five sets; "
                             "demo: the demo's evaluation (--model: its target, e.g. runs/demo/target/model)")
    parser.add_argument("--rows", type=int, default=None,
                        help="rows of each set (forget01 has 40); default 20, tofu200: 40 (200 rows in all)")
    parser.add_argument("--modes", default="ours,reference", help=f"from {', '.join(MODES)}")
    add_model_arguments(parser, "a random hidden-128, 4-layer model instead of --model", RESULTS / "evaluation.json")
    args = parser.parse_args()
    args.rows = args.rows or (40 if args.workload == "tofu200" else 20)
    if args.workload != "pair" and Path(args.output) == RESULTS / "evaluation.json":
        args.output = str(RESULTS / f"evaluation_{args.workload}.json")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"unknown mode(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(MODES)}")
    missing = [str(p) for p in SETS.values() if not p.exists()] if args.workload != "demo" else []
    if missing:
        print(f"bench_evaluation: {', '.join(missing)} absent; this benchmark needs the shared TOFU data")
        return 1
    model, tokenizer, judges = load_model_and_judges(args)
    results = []
    for mode in modes:
        print(f"mode {mode} ...", file=sys.stderr, flush=True)
        results.append(run_mode(mode, args, model, tokenizer, judges))
    by_mode = {r["mode"]: r for r in results}
    comparison = compare(by_mode["ours"], by_mode["reference"]) if {"ours", "reference"} <= by_mode.keys() else None
    print_tables(results, comparison)
    # ours as the baseline of every other mode: a speed-up above 1 = the mode is faster than ours
    against_ours = {mode: compare(result, by_mode["ours"]) for mode, result in by_mode.items()
                    if mode not in ("ours", "reference") and "ours" in by_mode}
    for mode, numbers in against_ours.items():
        print(f"{mode} against ours: total {numbers['speedup_total']:.2f}x, generation "
              f"{numbers['speedup_by_phase'].get('generation', float('nan')):.2f}x; identical generations "
              f"{numbers['same_generations']}/{numbers['rows']}; largest metric difference "
              f"{numbers['max_metric_abs_diff']:.2e}")

    report = {
        "command": command_line(),
        "model": args.model,
        "workload": args.workload,
        "data": args.data_description,
        "judges": judges.names(),
        "machine": machine(),
        "modes": [{k: v for k, v in r.items() if k != "records"} for r in results],
        "comparison": comparison,
        "against_ours": against_ours,
    }
    failures = []
    if comparison:
        if comparison["speedup_total"] < TARGET_SPEEDUP:
            failures.append(f"total speed-up {comparison['speedup_total']:.2f}x (want >= {TARGET_SPEEDUP}x)")
        if comparison["max_metric_abs_diff"] > EQUAL_METRIC:
            failures.append(f"metrics differ by {comparison['max_metric_abs_diff']:.2e} at {comparison['at']} "
                            f"(want <= {EQUAL_METRIC})")
    report["targets_missed"] = failures
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print("targets: " + ("all met" if comparison and not failures else "; ".join(failures) or "(one mode only)"))
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
