"""Wall time of one evaluation on 1 and on N CPU processes (``unlearnlm evaluate`` under torchrun).

    python benchmarks/bench_processes.py runs/demo/target/eval      # the demo's target, 1 and 2 processes
    python benchmarks/bench_processes.py runs/demo/target/eval --processes 1,2,4 --repeats 2
    python benchmarks/bench_processes.py --fast                     # a tiny random model: checks the script

EVAL_DIR is a finished evaluation folder (its config.yaml is the resolved evaluation config: the
demo writes its target's into OUTPUT_DIR/target/eval); it is evaluated again, unchanged, into a
temporary folder, once per process count (alternating when repeated). Each process runs torch
with --threads threads (default 1: one core per process). Reported per run: the wall time of the
whole command (start-up and model loading included), the summary's own timings (the slowest
process's generation, loss pass and judging, and the total), and the rows each process took;
the records of every run must equal the first run's (|difference| <= 1e-4 on every loss: a shard's
batches are padded otherwise than one process's, which moves float32 sums by about 1e-6 relative;
the tests hold two processes to 1e-6 on a tiny model whose batches pad alike).
Measure alone: on a machine shared with other jobs the times are upper bounds.
Writes benchmarks/results/processes.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
LOSSES = ("truth_loss", "paraphrased_loss")
LOSS_TOLERANCE = 1e-4  # float32 rounding of differently padded batches (module docstring)


def fast_evaluation(folder: Path) -> Path:
    """A tiny random model and 40 synthetic TOFU-shaped rows: a config.yaml to evaluate."""
    import yaml
    from gpu_check import synthetic_rows

    from unlearnlm.data.refusals import load_refusals
    from unlearnlm.io import atomic_write_jsonl
    from unlearnlm.tiny import make_tiny_model

    rows = synthetic_rows(40, 1)
    atomic_write_jsonl(folder / "forget.jsonl", rows)
    texts = [t for r in rows for t in (r["question"], r["answer"], r["paraphrased_answer"], *r["perturbed_answer"])]
    model = make_tiny_model(folder / "model", texts + load_refusals(), hidden_size=64, layers=2)
    config = {"model": {"name_or_path": str(model)}, "scenario": "custom",
              "data": {"custom_forget": [str(folder / "forget.jsonl")]},
              "judges": {"embedder": "none", "nli": "none"}, "bootstrap": {"samples": 100}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def run(processes: int, config: Path, output: Path, threads: int, port: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    launcher = ([sys.executable, "-m"] if processes == 1 else
                ["torchrun", "--nproc_per_node", str(processes), "--master_port", str(port), "-m"])
    started = time.perf_counter()
    done = subprocess.run([*launcher, "unlearnlm", "evaluate", "--config", str(config), f"output_dir={output}"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the {processes}-process evaluation failed")
    summary = json.loads((output / "summary.json").read_text())
    return {"processes": processes, "wall_s": round(wall, 2), "times": summary["times"],
            "rows_per_process": summary["evaluated_by"]["rows_per_process"]}


def records(folder: Path) -> dict[str, list[dict]]:
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((folder / "records").iterdir())}


def largest_difference(first: dict, other: dict) -> float:
    worst = 0.0
    for name, rows in first.items():
        for a, b in zip(rows, other[name], strict=True):
            for key in LOSSES:
                if a.get(key) is not None:
                    worst = max(worst, abs(a[key] - b[key]))
            pairs = zip(a["perturbed_losses"], b["perturbed_losses"], strict=True)
            worst = max([worst, *(abs(x - y) for x, y in pairs)])
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", nargs="?", default="runs/demo/target/eval",
                        help="a finished evaluation folder (its config.yaml is evaluated again)")
    parser.add_argument("--processes", default="1,2", help="process counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--fast", action="store_true", help="a tiny random model instead of EVAL_DIR")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "processes.json"))
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    with tempfile.TemporaryDirectory(prefix="unlearnlm-bench-processes-") as tmp:
        tmp = Path(tmp)
        source = fast_evaluation(tmp / "fast") if args.fast else Path(args.eval_dir)
        config = source / "config.yaml"
        if not config.exists():
            raise SystemExit(f"{config} does not exist: give a finished evaluation folder (e.g. runs/demo/target/eval)")
        results, first = [], None
        for repeat in range(args.repeats):
            for count in counts:
                out = tmp / f"run_{repeat}_{count}"
                result = run(count, config, out, args.threads, 29600 + count)
                found = records(out)
                first = first or found
                result["largest_loss_difference"] = largest_difference(first, found)
                if result["largest_loss_difference"] > LOSS_TOLERANCE:
                    raise SystemExit(f"{count} processes: records differ from the first run's by "
                                     f"{result['largest_loss_difference']}")
                results.append(result)
                print(json.dumps(result), flush=True)
    import torch

    report = {"command": "python " + " ".join(["benchmarks/bench_processes.py", *sys.argv[1:]]),
              "eval_dir": None if args.fast else str(Path(args.eval_dir).resolve()), "threads": args.threads,
              "cpus": os.cpu_count(), "torch": torch.__version__, "load_avg_end": os.getloadavg()[0],
              "runs": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
