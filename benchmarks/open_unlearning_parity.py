"""Side by side: open-unlearning's own TOFU evaluation against `unlearnlm evaluate suite=open-unlearning`.

Two steps, each in its own environment (open-unlearning pins transformers 4.45; unlearnlm needs 5):

1. open-unlearning's evaluation, run by its own code from a checkout of locuslab/open-unlearning,
   in an environment that has its requirements (transformers 4.4x, hydra-core, scikit-learn,
   rouge-score). The TOFU splits are read from local JSON files (the first ROWS rows of each),
   not from the hub: this script replaces its dataset loader, nothing else.

       /path/to/ou-env/bin/python benchmarks/open_unlearning_parity.py ou --ou-repo OU_CHECKOUT \\
           --model FOLDER --data TOFU_JSON_DIR --holdout HOLDOUT.json --rows 20 --out OUT_OU

2. unlearnlm's, here, on the same rows:

       unlearnlm evaluate FOLDER suite=open-unlearning data.source=TOFU_JSON_DIR data.forget=forget01 \\
           data.holdout=HOLDOUT.json ds_size=20 judges.embedder=none judges.nli=none bootstrap.samples=0 \\
           output_dir=OUT_UL

3. The comparison (any environment):

       python benchmarks/open_unlearning_parity.py compare --ou OUT_OU --ul OUT_UL

It prints every number of both TOFU_EVAL.json files, their difference, how many generations are
identical and the largest per-row difference of the average losses. Pass --system-prompt and
--date-string as the model's open-unlearning config sets them (Llama-3.2: "You are a helpful
assistant." and "10 Apr 2025", with model.prompt_format.kind=open-unlearning-llama3 on unlearnlm's
side); without them no system message is written (unlearnlm's `open-unlearning` preset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class LocalRows:
    """What its QADataset reads of a `datasets.Dataset`: len, rows by index, add_column."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    def add_column(self, name, values):
        return LocalRows([dict(row, **{name: int(value)}) for row, value in zip(self.rows, values)])


def run_open_unlearning(args) -> None:
    import types

    data_dir, holdout, rows = Path(args.data), Path(args.holdout), args.rows

    def load_local(path=None, name=None, split=None, **kwargs):
        file = holdout if str(name).startswith("holdout") else data_dir / f"{name}.json"
        return LocalRows(_rows(file)[:rows] if rows else _rows(file))

    sys.path.insert(0, str(Path(args.ou_repo) / "src"))
    # Modules its code imports without the evaluation using them (datasets: the loader above
    # replaces every use; deepspeed: its RMU trainer): empty stand-ins where they do not import.
    import importlib
    import importlib.machinery

    for name in ("datasets", "deepspeed"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = sys.modules[name] = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
    import data.qa
    import data.utils

    data.utils.load_hf_dataset = data.qa.load_hf_dataset = load_local
    overrides = [
        "experiment=eval/tofu/default", f"task_name={Path(args.out).name}", f"paths.output_dir={args.out}",
        f"model.model_args.pretrained_model_name_or_path={args.model}",
        f"model.tokenizer_args.pretrained_model_name_or_path={args.model}",
        f"model.model_args.attn_implementation={args.attention}", "model.model_args.torch_dtype=float32",
        f"model.model_args.device_map={args.device}", f"forget_split={args.forget}", "holdout_split=holdout01",
        f"eval.tofu.batch_size={args.batch_size}",
        f"model.template_args.system_prompt={json.dumps(args.system_prompt) if args.system_prompt else 'null'}",
        f"model.template_args.date_string={json.dumps(args.date_string) if args.date_string else 'null'}",
    ]  # its default TOFU metrics (configs/eval/tofu.yaml): the MIAs beyond Min-K% and EM are off there
    import eval as open_unlearning_eval  # its src/eval.py
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str((Path(args.ou_repo) / "configs").resolve()), version_base=None):
        config = compose(config_name="eval.yaml", overrides=overrides)
    open_unlearning_eval.main.__wrapped__(config)  # its entry point, without hydra's command line


def compare(args) -> None:
    ou = json.loads((Path(args.ou) / "TOFU_EVAL.json").read_text())
    ul = json.loads((Path(args.ul) / "TOFU_EVAL.json").read_text())
    print(f"{'metric':<28}{'open-unlearning':>18}{'unlearnlm':>14}{'|difference|':>14}")
    for name in sorted(set(ou) & set(ul)):
        a, b = ou[name].get("agg_value"), ul[name].get("agg_value")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            print(f"{name:<28}{a:>18.6f}{b:>14.6f}{abs(a - b):>14.2e}")
        else:
            print(f"{name:<28}{a!s:>18}{b!s:>14}")
    print("only open-unlearning:", sorted(set(ou) - set(ul)))
    records = Path(args.ul) / "records"
    for prefix, set_name in (("forget", "forget"), ("retain", "retain"), ("ra", "real_authors"),
                             ("wf", "world_facts")):
        rouge = ou.get(f"{prefix}_Q_A_ROUGE", {}).get("value_by_index", {})
        mine = [json.loads(line) for line in (records / f"{set_name}.jsonl").read_text().splitlines()]
        same = sum(rouge[str(i)]["generation"] == r["generation"] for i, r in enumerate(mine) if str(i) in rouge)
        probs = ou.get(f"{prefix}_Q_A_Prob", {}).get("value_by_index", {})
        loss_gap = max((abs(probs[str(i)]["avg_loss"] - r["truth_loss"]) for i, r in enumerate(mine)
                        if str(i) in probs), default=float("nan"))
        print(f"{set_name:<14} identical generations {same}/{len(mine)}; "
              f"max |average loss difference| {loss_gap:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ou = commands.add_parser("ou", help="run open-unlearning's TOFU evaluation on local JSON splits")
    ou.add_argument("--ou-repo", required=True)
    ou.add_argument("--model", required=True)
    ou.add_argument("--data", required=True, help="folder of TOFU JSON splits (forget01_perturbed.json, ...)")
    ou.add_argument("--holdout", required=True, help="a JSON file of holdout QA rows")
    ou.add_argument("--forget", default="forget01")
    ou.add_argument("--rows", type=int, default=0, help="first N rows of each split; 0 = all")
    ou.add_argument("--out", required=True)
    ou.add_argument("--batch-size", type=int, default=32)
    ou.add_argument("--attention", default="sdpa")
    ou.add_argument("--device", default="cpu")
    ou.add_argument("--system-prompt")
    ou.add_argument("--date-string")
    cmp = commands.add_parser("compare", help="compare the two output folders")
    cmp.add_argument("--ou", required=True)
    cmp.add_argument("--ul", required=True)
    args = parser.parse_args()
    run_open_unlearning(args) if args.command == "ou" else compare(args)


if __name__ == "__main__":
    main()
