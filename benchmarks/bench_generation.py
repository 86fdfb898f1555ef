"""Where a generation batch's time goes, and what letting ended rows leave the batch saves.

Answers the demo's evaluation questions (the forget rows, retain rows and both utility sets of
the demo's world, as ``unlearnlm demo`` evaluates them) greedily, in batches of similar prompt
length (``evaluation.generation_batch_size``), two ways, and checks that every token agrees:

    generate   plain greedy ``model.generate`` on each batch (left-padded, KV cache): the batch runs
               until its longest answer ends, ended rows still computed (the code before)
    ours       ``evaluation.inference.greedy_new_tokens``: the same forwards, but a row leaves the
               batch, and its KV cache rows with it, as soon as it ends

Per mode: seconds in the prefill (the prompts' forward) and in the decoding steps, the steps,
the row-steps computed (rows in the batch, summed over the steps) and how many of them were
answer tokens (the rest: rows that had ended), and answers per second.

    python benchmarks/bench_generation.py                          # the embedded SmolLM2-135M
    python benchmarks/bench_generation.py --model runs/demo/target/model --threads 2
    python benchmarks/bench_generation.py --fast                   # a random 4-layer model

Writes benchmarks/results/generation.json (or --output). UNLEARNLM_CACHE holds the world.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_common import command_line, machine

RESULTS = Path(__file__).resolve().parent / "results"


def demo_questions(ds_size: int) -> list[str]:
    from unlearnlm.config import DemoConfig
    from unlearnlm.data.records import load_split, select_tasks
    from unlearnlm.scenarios.demo import build_world
    from unlearnlm.training.models import cache_dir

    config = DemoConfig()
    world = str(build_world(config, cache_dir() / "demo"))
    rows = select_tasks(load_split(f"{config.forget_split}_perturbed", world), ["1"])[:ds_size]
    for split in ("retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        rows += load_split(split, world)[:ds_size]
    return list(dict.fromkeys(r["question"] for r in rows))


class ForwardClock:
    """Seconds and batch rows of every forward of ``model``; the first of a batch is its prefill."""

    def __init__(self, model):
        self.calls: list[tuple[int, int, float]] = []  # (rows, new positions, seconds)
        self._started = 0.0
        self._hooks = [model.register_forward_pre_hook(self._before, with_kwargs=True),
                       model.register_forward_hook(self._after, with_kwargs=True)]

    def _before(self, module, args, kwargs):
        self._started = time.perf_counter()

    def _after(self, module, args, kwargs, output):
        ids = kwargs["input_ids"]
        self.calls.append((ids.shape[0], ids.shape[1], time.perf_counter() - self._started))

    def remove(self):
        for hook in self._hooks:
            hook.remove()


def plain_generate(model, prompts, budgets, pad_id, eos_ids) -> list[list[int]]:
    """The code before: one ``model.generate`` until the longest answer ends, each row cut at its
    budget and before its first EOS."""
    import torch
    from transformers import GenerationConfig

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    config = GenerationConfig(max_new_tokens=max(budgets), do_sample=False, num_beams=1, use_cache=True,
                              pad_token_id=pad_id, eos_token_id=list(eos_ids))
    output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, width:].tolist()
    result = []
    for tokens, budget in zip(output, budgets):
        tokens = tokens[:budget]
        ends = [k for k, t in enumerate(tokens) if t in eos_ids]
        result.append(tokens[: ends[0]] if ends else tokens)
    return result


def run(mode: str, model, formatter, questions, max_length: int, batch_size: int) -> tuple[dict, list]:
    import torch

    from unlearnlm.data.batches import length_batches
    from unlearnlm.evaluation.inference import _eos_ids, _pad_id, greedy_new_tokens

    pad_id, eos_ids = _pad_id(formatter), _eos_ids(model, formatter)
    prompts = [formatter.prompt_ids(q) for q in questions]
    tokens: list = [None] * len(prompts)
    clock = ForwardClock(model)
    prefills = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in length_batches([len(p) for p in prompts], batch_size, sort=True):
            call = plain_generate if mode == "generate" else greedy_new_tokens
            out = call(model, [prompts[i] for i in batch], [max_length - len(prompts[i]) for i in batch],
                       pad_id, eos_ids)
            for i, t in zip(batch, out):
                tokens[i] = t
            prefills += 1
    total = time.perf_counter() - started
    clock.remove()
    prefill = [c for c in clock.calls if c[1] > 1]
    steps = [c for c in clock.calls if c[1] == 1]
    answer_tokens = sum(len(t) for t in tokens)
    row_steps = sum(c[0] for c in steps) + sum(c[0] for c in prefill)  # the prefill makes each row's first token
    return {
        "mode": mode, "answers": len(questions), "seconds": round(total, 2),
        "answers_per_s": round(len(questions) / total, 3),
        "prefill_s": round(sum(c[2] for c in prefill), 2), "decode_s": round(sum(c[2] for c in steps), 2),
        "batches": prefills, "decode_steps": len(steps), "row_steps": row_steps,
        "answer_tokens": answer_tokens,
        # Rows computed after they had ended (EOS or budget): the waste a shrinking batch removes.
        "ended_row_share": round(1 - min(answer_tokens, row_steps) / row_steps, 3) if row_steps else 0.0,
        "longest_answer": max(len(t) for t in tokens),
        "median_answer": sorted(len(t) for t in tokens)[len(tokens) // 2],
    }, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--fast", action="store_true", help="a random 4-layer model (the unlearning benchmark's)")
    parser.add_argument("--ds-size", type=int, default=20, help="rows of each set (the demo's ds_size)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=200)
    parser.add_argument("--modes", default="generate,ours")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS / "generation.json")
    args = parser.parse_args()

    import tempfile

    import torch

    from unlearnlm.config import ModelConfig
    from unlearnlm.training.models import load_for_inference, load_prompt_format

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.fast:
        from bench_unlearning import fast_model

        args.model = str(fast_model(Path(tempfile.gettempdir()) / "unlearnlm-bench-fast-model"))
    config = ModelConfig(name_or_path=args.model)
    model, tokenizer = load_for_inference(config)
    formatter = load_prompt_format(config, tokenizer)
    questions = demo_questions(args.ds_size)
    results, outputs = [], {}
    for mode in args.modes.split(","):
        result, outputs[mode] = run(mode, model, formatter, questions, args.max_length, args.batch_size)
        results.append(result)
        print(json.dumps(result), flush=True)
    modes = list(outputs)
    same = [sum(a == b for a, b in zip(outputs[modes[0]], outputs[m])) for m in modes[1:]]
    report = {"command": command_line(), "machine": machine(), "model": args.model, "results": results,
              "identical_answers": {m: f"{s}/{len(questions)}" for m, s in zip(modes[1:], same)}}
    print(f"identical answers: {report['identical_answers']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
