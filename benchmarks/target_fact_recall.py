"""Does the demo's target know what it must forget? Fact recall while it fine-tunes.

Fine-tunes the demo's target (``DemoConfig``'s world and recipe, with the overrides given) and,
at the end of the chosen epochs, answers the forget rows, real authors and world facts greedily
and reports each set's fact recall (the share of answers that state the true fact) and ROUGE-L
recall. Epoch 0 is the base model: what a model that never saw the forget authors gets by chance.
With a constant learning rate after warm-up (the default here), the model at epoch N is the model
an N-epoch run of the same recipe makes, so one run shows the whole curve.

    python benchmarks/target_fact_recall.py --epochs 8 --at 0,2,3,4,5,6,8
    python benchmarks/target_fact_recall.py --train retain90 --at 0,5   # the retain model

Writes benchmarks/results/target_fact_recall.json (or --output). Set UNLEARNLM_CACHE to a folder
of your own: the world and the converted model are cached there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from transformers import TrainerCallback

from unlearnlm.config import DemoConfig
from unlearnlm.data.records import load_split, select_tasks
from unlearnlm.evaluation.inference import generate_answers
from unlearnlm.evaluation.metrics import rouge_l_recall, states_fact
from unlearnlm.scenarios.demo import build_world, finetune_recipe
from unlearnlm.training.models import cache_dir, load_prompt_format, load_tokenizer
from unlearnlm.training.run import finetune

RESULTS = Path(__file__).resolve().parent / "results"


def eval_rows(world: Path, config: DemoConfig) -> dict[str, list[dict]]:
    forget = select_tasks(load_split(f"{config.forget_split}_perturbed", str(world)), ["1"])
    return {"forget": forget, "real_authors": load_split("real_authors_perturbed", str(world)),
            "world_facts": load_split("world_facts_perturbed", str(world))}


def score(model, formatter, sets: dict[str, list[dict]]) -> dict:
    import torch

    result, was_training = {}, model.training
    model.eval()
    for name, rows in sets.items():
        with torch.inference_mode():
            answers = generate_answers(model, formatter, [r["question"] for r in rows], batch_size=64)
        stated = [states_fact(a, r["facts"]) for a, r in zip(answers, rows)]
        result[name] = {"fact_recall": sum(stated) / len(rows),
                        "rouge": sum(rouge_l_recall(a, r["answer"]) for a, r in zip(answers, rows)) / len(rows),
                        "answers": answers[:3]}
    model.train(was_training)
    return result


class RecallAtEpochs(TrainerCallback):
    def __init__(self, epochs: set[int], formatter, sets, log: list):
        self.epochs, self.formatter, self.sets, self.log = epochs, formatter, sets, log
        self.started = time.time()

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        epoch = round(state.epoch)
        if epoch in self.epochs:
            entry = {"epoch": epoch, "step": state.global_step, "train_s": round(time.time() - self.started, 1),
                     **score(model, self.formatter, self.sets)}
            self.log.append(entry)
            print(json.dumps({k: (v if not isinstance(v, dict) else {m: v[m] for m in ("fact_recall", "rouge")})
                              for k, v in entry.items()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--at", default="0,2,3,4,5,6,8", help="epochs after which to answer (0 = the base model)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--schedule", default="constant_with_warmup")
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--train", default="full", help="the split to fine-tune on (full = the target)")
    parser.add_argument("--output", type=Path, default=RESULTS / "target_fact_recall.json")
    args = parser.parse_args()

    config = DemoConfig()
    training = replace(config.finetune_training, epochs=args.epochs, lr_scheduler=args.schedule, progress=False,
                       **({"lr": args.lr} if args.lr else {}),
                       **({"per_device_batch_size": args.batch} if args.batch else {}),
                       **({"warmup_epochs": args.warmup} if args.warmup is not None else {}))
    config = replace(config, finetune_training=training)
    world = build_world(config, cache_dir() / "demo")
    sets = eval_rows(world, config)
    at = {int(e) for e in args.at.split(",")}
    tokenizer = load_tokenizer(config.model)
    formatter = load_prompt_format(config.model, tokenizer)
    log: list = []
    with tempfile.TemporaryDirectory() as scratch:
        recipe = finetune_recipe(config, Path(scratch), world, "target", [args.train])
        if 0 in at:
            from unlearnlm.training.models import load_for_inference

            base, _ = load_for_inference(config.model, tokenizer)
            log.append({"epoch": 0, "step": 0, "train_s": 0.0, **score(base, formatter, sets)})
            print(json.dumps({"epoch": 0, **{k: log[0][k]["fact_recall"] for k in sets}}), flush=True)
            del base
        finetune(recipe, [RecallAtEpochs(at, formatter, sets, log)])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"train": args.train, "training": vars(training), "at": log}, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
