"""Does the default model know the facts of the utility sets? (issue 4)

Asks SmolLM2-135M-Instruct (or ``--model``) every candidate question of
``unlearnlm.data.utility_facts`` with greedy decoding and counts a fact as known when the
generation contains the short answer and none of the three wrong answers (case-insensitive).
Prints the per-set numbers and the questions it gets wrong.

    python benchmarks/check_utility_facts.py [--candidates] [--model smollm2-135m] [--max-new-tokens 40]
"""

from __future__ import annotations

import argparse
import time
import unicodedata


def plain(text: str) -> str:
    """Lower case without accents, so 'Brontë' matches 'Bronte'."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def knows(generation: str, row: dict) -> bool:
    text = plain(generation)
    return plain(row["answer"]) in text and not any(plain(w) in text for w in row["perturbed_answer"])


def generate_answers(model, tokenizer, questions: list[str], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    import torch

    tokenizer.padding_side = "left"  # decoder-only batches generate from the right edge
    answers = []
    for start in range(0, len(questions), batch_size):
        prompts = [
            tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
            for q in questions[start:start + batch_size]
        ]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def check(model, tokenizer, rows: list[dict], max_new_tokens: int) -> list[tuple[dict, str, bool]]:
    generations = generate_answers(model, tokenizer, [r["question"] for r in rows], max_new_tokens)
    return [(row, gen, knows(gen, row)) for row, gen in zip(rows, generations)]


def main() -> None:
    import torch

    from unlearnlm.config import ModelConfig
    from unlearnlm.data import utility_facts
    from unlearnlm.training.models import load_model, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--candidates", action="store_true", help="check every candidate, not only the kept facts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = ModelConfig(name_or_path=args.model)
    model, tokenizer = load_model(config, dtype="float32").eval(), load_tokenizer(config)
    sets = {"real_authors": utility_facts.REAL_AUTHORS, "world_facts": utility_facts.WORLD_FACTS}
    if args.candidates:
        sets = {"real_authors candidates": utility_facts.REAL_AUTHOR_CANDIDATES,
                "world_facts candidates": utility_facts.WORLD_FACT_CANDIDATES}
    for name, rows in sets.items():
        began = time.time()
        results = check(model, tokenizer, rows, args.max_new_tokens)
        correct = sum(ok for _, _, ok in results)
        print(f"{name}: {correct}/{len(rows)} answered correctly ({time.time() - began:.0f} s)")
        for row, gen, ok in results:
            if not ok:
                print(f"  wrong: {row['question']!r} -> {' '.join(gen.split())[:100]!r}")


if __name__ == "__main__":
    main()
