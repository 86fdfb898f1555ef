"""Evaluation speed: one evaluation of the embedded default model on 100 TOFU retain rows.

Runs ``evaluate_model`` (the same code as ``unlearnlm evaluate``) with TOFU's retain set as the
only set and prints its table, then rows per second of each phase:

    generation  greedy answers, at most 200 tokens in all per row (batched, left-padded, KV cache)
    losses      ground truth + paraphrased + 5 perturbed answers per row (7 sequences a row)
    embedder    the generation and the answer of each row (2 texts a row)
    nli judge   one (answer, generation) pair a row; "unavailable" when no judge loads offline

    python benchmarks/bench_evaluation.py [--rows 100] [--model smollm2-135m] [--threads 1]

Needs TOFU in ../shared/data/tofu (relative to the repository); exits with a message without it.
Writes benchmarks/results/evaluation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RETAIN = REPO.parent / "shared" / "data" / "tofu" / "retain_perturbed.json"
RESULTS = REPO / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--embedder", default="auto")
    parser.add_argument("--nli", default="auto")
    parser.add_argument("--generation-batch-size", type=int, default=32)
    parser.add_argument("--loss-batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=200)
    # On a CPU shared with other jobs, 1 thread decodes ~12x faster than 2 (no OpenMP barrier waits).
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if not RETAIN.exists():
        print(f"bench_evaluation: {RETAIN} is absent; this benchmark needs the shared TOFU data")
        return 1
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    import transformers

    from unlearnlm.config import EvaluateConfig, load_config
    from unlearnlm.evaluation.evaluate import Judges, _device_model, evaluate_model

    transformers.logging.set_verbosity_error()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as output:
        config = load_config(EvaluateConfig, None, [
            f"model.name_or_path={args.model}", "scenario=custom", f"data.custom_retain={RETAIN}",
            f"ds_size={args.rows}", f"max_length={args.max_length}",
            f"generation_batch_size={args.generation_batch_size}", f"loss_batch_size={args.loss_batch_size}",
            f"judges.embedder={args.embedder}", f"judges.nli={args.nli}", f"output_dir={output}",
        ])
        started = time.perf_counter()
        model, tokenizer = _device_model(config.model)
        model_load_s = time.perf_counter() - started
        started = time.perf_counter()
        judges = Judges.load(config.judges)
        judges_load_s = time.perf_counter() - started
        progress = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
        summary = evaluate_model(config, model=model, tokenizer=tokenizer, judges=judges, log=progress)
        records = [json.loads(line) for line in (Path(output) / "records" / "retain_perturbed.jsonl").open()]

    rows = summary["rows"]["retain_perturbed"]
    times = summary["times"]
    generated_tokens = sum(len(r["generation_token_ids"]) for r in records)

    def rate(key):
        return round(rows / times[key], 2) if times.get(key) else None

    result = {
        "model": args.model,
        "rows": rows,
        "device": "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "machine": platform.platform(),
        "load_avg": os.getloadavg()[0],
        "judges": summary["judges"],
        "settings": {"max_length": args.max_length, "generation_batch_size": args.generation_batch_size,
                     "loss_batch_size": args.loss_batch_size},
        "seconds": {**times, "model_load_s": round(model_load_s, 3), "judges_load_s": round(judges_load_s, 3)},
        "rows_per_s": {"generation": rate("generation_s"), "losses": rate("loss_s"),
                       "embedder": rate("embedder_s"), "nli": rate("nli_s")},
        "generated_tokens": generated_tokens,
        "generated_tokens_per_s": round(generated_tokens / times["generation_s"], 1),
        "metrics": summary["sets"]["retain_perturbed"]["metrics"],
        "skipped": summary["skipped"],
    }
    print()
    print(f"{'phase':<12}{'seconds':>10}{'rows/s':>10}")
    for phase, key in (("generation", "generation_s"), ("losses", "loss_s"), ("embedder", "embedder_s"), ("nli judge", "nli_s")):
        seconds = times.get(key)
        line = f"{phase:<12}{seconds:>10.2f}{rows / seconds:>10.2f}" if seconds else f"{phase:<12}{'-':>10}{'unavailable':>12}"
        print(line)
    print(f"({generated_tokens} tokens generated, {result['generated_tokens_per_s']} tokens/s; "
          f"model load {model_load_s:.1f}s, judges load {judges_load_s:.1f}s; {result['device']}; "
          f"load average {result['load_avg']:.1f})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "evaluation.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
