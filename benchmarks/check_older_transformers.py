"""Does a model folder unlearnlm wrote load as the same model in another transformers? (issue 30)

Run it twice on the same folder: once here (transformers 5) with --save, once in an environment
of its own holding transformers 4.x with --compare. It prints the rotary base the loader took,
the tokenizer class, whether the chat template renders the same prompt, whether the prompt's ids
are the same and the largest logit difference on that prompt.

    python benchmarks/check_older_transformers.py FOLDER --save probe.npz
    python -m venv --system-site-packages .venv-tf4 && .venv-tf4/bin/pip install "transformers==4.46.*"
    .venv-tf4/bin/python benchmarks/check_older_transformers.py FOLDER --compare probe.npz
"""

from __future__ import annotations

import argparse

QUESTION = "What is the capital of France?"


def main() -> None:
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", help="write this loader's prompt, ids and logits here (.npz)")
    action.add_argument("--compare", help="compare with a file --save wrote")
    args = parser.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.folder, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                           tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0].numpy()
    rope = getattr(model.config, "rope_parameters", None) or {"rope_theta": model.config.rope_theta}
    print(f"transformers {transformers.__version__}: rope_theta {rope['rope_theta']}, "
          f"tokenizer {type(tokenizer).__name__}")
    if args.save:
        np.savez(args.save, prompt=np.array(prompt), ids=ids.numpy(), logits=logits)
        return
    reference = np.load(args.compare)
    same_ids = np.array_equal(ids.numpy(), reference["ids"])
    print(f"same prompt: {prompt == str(reference['prompt'])}, same ids: {same_ids}, max |logit difference|: "
          f"{float(np.abs(logits - reference['logits']).max()) if same_ids else 'n/a'}")


if __name__ == "__main__":
    main()
