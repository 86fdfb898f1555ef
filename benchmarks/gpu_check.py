"""The GPU check: unlearnlm on a model of a real target's shape, with nothing downloaded.

    bash benchmarks/gpu_check.sh                 # a GPU: Llama-3.2-1B's shape, bf16, SDPA (< 8 min)
    bash benchmarks/gpu_check.sh --cpu-smoke     # any machine: the same steps on a tiny model (~1 min)

Builds on the spot, in a temporary folder: synthetic TOFU-shaped rows (a question of ~20 words,
an answer of ~50, its paraphrase and five perturbed answers), a word-level tokenizer of their
words, and a randomly initialised Llama with Llama-3.2-1B's configuration (written out below:
16 layers, hidden 2048, 128256-token vocabulary) in bf16 with SDPA attention. Then, in this one
process:
  - one epoch of NPO+GD and one of ME+GD through unlearnlm's trainer (training.run), and one
    epoch of plain ``transformers.Trainer`` fine-tuning (cross-entropy on the answers) on the
    same forget and retain rows with the same batch size, optimiser and precision: real
    (unpadded) tokens per second of each, unlearnlm's over the Trainer's (the ratio), and the
    peak GPU memory of each;
  - one evaluation inference (evaluation.inference.infer_sets: greedy generation to
    max_length=200 and the loss pass) on the forget rows: generated tokens per second.
A random model never emits EOS, so every answer runs to its full budget: the worst case of
generation. Writes one JSON of numbers (--output) and prints it, with the versions it ran on.

Imports only torch, transformers, accelerate and unlearnlm's own modules (from this checkout's
src/, nothing installed needed): no datasets, rouge-score, lm-eval, gguf, deepspeed or
sentence-transformers (tests/test_multiprocess.py runs --cpu-smoke with them made unimportable).
The JSON lists which optional packages were loaded all the same (transformers loads some of
them itself when they are installed).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

# meta-llama/Llama-3.2-1B's config.json, as published (the vocabulary is kept at full size: the
# output projection onto 128256 tokens is a large share of a 1B model's work).
LLAMA_3_2_1B = {
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "hidden_act": "silu",
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
    "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": True, "initializer_range": 0.02,
}
# --cpu-smoke: the same architecture, tiny.
SMOKE = dict(LLAMA_3_2_1B, vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16)

OPTIONAL = ("datasets", "rouge_score", "lm_eval", "gguf", "deepspeed", "sentence_transformers", "peft", "scipy")
SIZES = {  # rows per set, batch size, evaluation rows
    "gpu": {"rows": 512, "batch": 16, "eval_rows": 128},
    "cpu-smoke": {"rows": 16, "batch": 4, "eval_rows": 6},
}


def versions() -> dict:
    import accelerate
    import torch
    import transformers

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "cuda": torch.version.cuda, "device": device,
            "device_count": torch.cuda.device_count()}


# ---- synthetic data, tokenizer and model --------------------------------------------------------


def synthetic_rows(count: int, seed: int) -> list[dict]:
    """TOFU-shaped rows: question ~20 words, answer ~50, paraphrase, five perturbed answers."""
    rng = random.Random(seed)
    words = [f"w{k}" for k in range(1500)]

    def sentence(length: int) -> str:
        return " ".join(rng.choice(words) for _ in range(length)) + "."

    return [{"task_id": "1", "question": sentence(rng.randint(14, 26)) + " ?", "answer": sentence(rng.randint(35, 65)),
             "paraphrased_answer": sentence(rng.randint(35, 65)),
             "perturbed_answer": [sentence(rng.randint(35, 65)) for _ in range(5)]}
            for _ in range(count)]


def write_data(folder: Path, rows: int) -> Path:
    from unlearnlm.io import atomic_write_jsonl

    forget, retain = synthetic_rows(rows, 1), synthetic_rows(rows, 2)
    for name, data in (("forget", forget), ("forget_perturbed", forget), ("retain", retain),
                       ("retain_perturbed", retain)):
        atomic_write_jsonl(folder / f"{name}.json", data)
    return folder


def build_model(folder: Path, shape: dict, texts: list[str], device: str, dtype) -> Path:
    """The tokenizer (unlearnlm.tiny's word-level one, fitted to ``texts``) and a random Llama of
    ``shape`` in ``dtype``, created on ``device`` and saved into ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from unlearnlm.data.refusals import load_refusals
    from unlearnlm.tiny import make_tiny_model

    # The tokenizer (written with a throwaway tiny model) gets exactly the model's vocabulary:
    # every token a random model generates decodes to a word, so an answer's re-encoded length
    # (generation_token_ids) is the number of tokens generated.
    texts = texts + load_refusals()
    make_tiny_model(folder, texts)
    fillers = shape["vocab_size"] - json.loads((folder / "config.json").read_text())["vocab_size"]
    make_tiny_model(folder, texts + [" ".join(f"filler{k}" for k in range(max(fillers, 0)))],
                    max_vocab=shape["vocab_size"])
    tiny = json.loads((folder / "config.json").read_text())
    if tiny["vocab_size"] != shape["vocab_size"]:
        raise SystemExit(f"gpu_check: the tokenizer has {tiny['vocab_size']} tokens, not {shape['vocab_size']}")
    config = LlamaConfig(**copy.deepcopy(shape), pad_token_id=tiny["pad_token_id"], eos_token_id=tiny["eos_token_id"],
                         bos_token_id=tiny["bos_token_id"])
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = tiny["pad_token_id"]
    model.save_pretrained(folder)
    del model
    return folder


# ---- measurements -------------------------------------------------------------------------------


def reset_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib():
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None


def unlearn_epoch(method_name: str, model_dir: Path, data_dir: Path, out: Path, batch: int, dtype: str) -> dict:
    """One epoch of ``method_name`` through unlearnlm's trainer: real tokens/s and peak memory."""
    from bench_unlearning import train_and_time  # times from the first micro-batch, counts real tokens

    from unlearnlm.config import UnlearnConfig, load_config
    from unlearnlm.methods import get_method
    from unlearnlm.training.run import build_unlearning_trainer, load_unlearning_data

    config = load_config(UnlearnConfig, overrides=[
        f"method={method_name}", f"model.name_or_path={model_dir}", f"model.dtype={dtype}",
        f"data.source={data_dir}", "data.forget=forget", "data.retain=retain", "data.task_id=1",
        "training.epochs=1", f"training.per_device_batch_size={batch}", "training.gradient_accumulation_steps=1",
        "training.warmup_epochs=0", "training.progress=false", "training.logging_steps=1000",
        f"output_dir={out}",
    ])
    method = get_method(config.method)
    reset_memory()
    started = time.perf_counter()
    trainer, _ = build_unlearning_trainer(config, method, load_unlearning_data(config, method), out)
    setup_s = time.perf_counter() - started  # loading, and NPO's reference pass before training
    stats = train_and_time(trainer, None)
    result = {"method": method_name, "setup_s": round(setup_s, 2), "train_s": round(stats["seconds"], 3),
              "real_tokens": stats["real_tokens"], "tokens_per_s": round(stats["real_tokens"] / stats["seconds"], 1),
              "padded_share": round(1 - stats["real_tokens"] / stats["tensor_tokens"], 4),
              "peak_gpu_gib": peak_memory_gib(), "bf16": bool(trainer.args.bf16),
              "optimizer": getattr(trainer.args.optim, "value", trainer.args.optim),
              "attention": trainer.model.config._attn_implementation}
    del trainer
    return result


def plain_trainer_epoch(model_dir: Path, data_dir: Path, out: Path, batch: int, dtype: str, like: dict) -> dict:
    """One epoch of plain transformers.Trainer fine-tuning (cross-entropy on the answers) on the
    forget and retain rows, with the unlearning runs' batch size, optimiser and precision."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from unlearnlm.config import ModelConfig
    from unlearnlm.data.records import read_records_file
    from unlearnlm.training.models import load_model, load_prompt_format, load_tokenizer

    model_config = ModelConfig(name_or_path=str(model_dir), dtype=dtype)
    tokenizer = load_tokenizer(model_config)
    formatter = load_prompt_format(model_config, tokenizer)
    rows = read_records_file(data_dir / "forget.json") + read_records_file(data_dir / "retain.json")
    examples = []
    for row in rows:
        encoded = formatter.encode(row["question"], row["answer"])
        ids = list(encoded.input_ids)
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [-100] * encoded.prompt_length + ids[encoded.prompt_length:]})
    reset_memory()
    model = load_model(model_config)
    args = TrainingArguments(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=batch,
                             learning_rate=1e-5, optim=like["optimizer"], bf16=like["bf16"], save_strategy="no",
                             report_to="none", logging_steps=1000, disable_tqdm=True, dataloader_num_workers=0,
                             use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=examples,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    counted = {"tokens": 0, "started": None}
    step = trainer.training_step

    def counted_step(model, inputs, *rest, **kwargs):
        if counted["started"] is None:
            counted["started"] = time.perf_counter()
        counted["tokens"] += int(inputs["attention_mask"].sum())
        return step(model, inputs, *rest, **kwargs)

    trainer.training_step = counted_step
    trainer.train()
    seconds = time.perf_counter() - counted["started"]
    result = {"train_s": round(seconds, 3), "real_tokens": counted["tokens"],
              "tokens_per_s": round(counted["tokens"] / seconds, 1), "peak_gpu_gib": peak_memory_gib()}
    del trainer, model
    return result


def evaluation_generation(model_dir: Path, data_dir: Path, rows: int, dtype: str) -> dict:
    """One evaluation inference (greedy generation to max_length=200, then the loss pass) on the
    first ``rows`` forget rows: generated tokens per second."""
    from unlearnlm.config import ModelConfig
    from unlearnlm.evaluation.inference import InferenceTimes, infer_sets
    from unlearnlm.evaluation.sets import custom_set, load_set_rows
    from unlearnlm.training.models import load_for_inference, load_prompt_format

    model_config = ModelConfig(name_or_path=str(model_dir), dtype=dtype)
    reset_memory()
    model, tokenizer = load_for_inference(model_config)
    formatter = load_prompt_format(model_config, tokenizer)
    sets = [load_set_rows(custom_set(str(data_dir / "forget_perturbed.json"), "forget"), None, None, rows)]
    times = InferenceTimes()
    records = infer_sets(model, formatter, sets, max_length=200, times=times)[0]
    generated = sum(len(r["generation_token_ids"]) for r in records)
    result = {"rows": len(records), "generated_tokens": generated, "generation_s": round(times.generation_s, 3),
              "generated_tokens_per_s": round(generated / times.generation_s, 1), "loss_s": round(times.loss_s, 3),
              "peak_gpu_gib": peak_memory_gib()}
    del model
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="a tiny model on the CPU: proves the steps run")
    parser.add_argument("--output", default=None, help="the JSON file (default benchmarks/results/gpu_check*.json)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from unlearnlm.data.records import read_records_file

    transformers.logging.set_verbosity_error()
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no GPU visible to torch; run with --cpu-smoke to check the steps on the CPU")
    name = "gpu_check-cpu-smoke.json" if args.cpu_smoke else "gpu_check.json"
    output = Path(args.output or REPO / "benchmarks" / "results" / name)
    size = SIZES[mode]
    result = {"mode": mode, "versions": versions(), "shape": SMOKE if args.cpu_smoke else LLAMA_3_2_1B, "sizes": size}
    print(json.dumps(result["versions"]), flush=True)
    dtype = "float32" if args.cpu_smoke else "bfloat16"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unlearnlm-gpu-check-") as tmp:
        tmp = Path(tmp)
        data_dir = write_data(tmp / "data", size["rows"])
        texts = [t for name in ("forget", "retain") for r in read_records_file(data_dir / f"{name}.json")
                 for t in (r["question"], r["answer"], r["paraphrased_answer"], *r["perturbed_answer"])]
        model_dir = build_model(tmp / "model", result["shape"], texts, "cuda" if mode == "gpu" else "cpu",
                                getattr(torch, dtype))
        result["build_s"] = round(time.perf_counter() - started, 2)
        runs = [unlearn_epoch(m, model_dir, data_dir, tmp / m.replace("+", "_"), size["batch"], dtype)
                for m in ("NPO+GD", "ME+GD")]
        baseline = plain_trainer_epoch(model_dir, data_dir, tmp / "trainer", size["batch"], dtype, runs[0])
        for run in runs:
            run["tokens_per_s_vs_trainer"] = round(run["tokens_per_s"] / baseline["tokens_per_s"], 3)
        result.update(unlearning=runs, plain_trainer=baseline,
                      evaluation=evaluation_generation(model_dir, data_dir, size["eval_rows"], dtype))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["optional_packages_loaded"] = sorted(p for p in OPTIONAL if sys.modules.get(p) is not None)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"gpu_check: written to {output}")


if __name__ == "__main__":
    main()
