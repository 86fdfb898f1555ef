"""WMDP: unlearn hazardous text (the forget corpus), keep general text (the retain corpus);
score accuracy on lm-eval's wmdp_bio and wmdp_cyber (lower = forgotten, chance 0.25) and mmlu.

    OUTPUT_DIR/config.yaml               the resolved WmdpConfig
    OUTPUT_DIR/target/downstream.json    the target's lm-eval scores
    OUTPUT_DIR/METHOD/                   the unlearning run folder and its downstream.json
    OUTPUT_DIR/summary.json              every model's headline accuracies
    OUTPUT_DIR/results.md                the table the command prints
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import WmdpConfig
from ..io import atomic_write_json, atomic_write_text, read_json
from ..tables import markdown_table
from ..training.models import load_for_inference
from .common import claim_output_folder

DOWNSTREAM_FILE = "downstream.json"


def run_config(config: WmdpConfig):
    return replace(config.unlearn, output_dir=str(Path(config.output_dir) / config.unlearn.method.replace("/", "_")))


def score_model(config: WmdpConfig, model_path: str, folder: Path) -> dict:
    """Headline accuracies of one model (read back when its downstream.json is already there)."""
    from ..evaluation.downstream import run_downstream, write_downstream

    path = folder / DOWNSTREAM_FILE
    if not path.exists():
        model, tokenizer = load_for_inference(replace(config.unlearn.model, name_or_path=model_path))
        write_downstream(run_downstream(model, tokenizer, config.downstream), folder)
    return read_json(path)["headline"]


def run_wmdp(config: WmdpConfig) -> tuple[Path, str]:
    """Score the target, unlearn, score the result; returns the output folder and the table."""
    from ..errors import UserError
    from ..methods import get_method
    from ..training.run import load_unlearning_data, unlearn

    # config is validated (unlearnlm.api.wmdp builds it)
    if not (config.downstream.enabled and config.downstream.tasks):
        raise UserError("downstream.tasks is empty or disabled: WMDP is scored with lm-eval "
                        "(wmdp_bio, wmdp_cyber, mmlu)")
    run = run_config(config)
    if config.train:
        load_unlearning_data(run, get_method(run.method))  # bad corpora fail before any model loads
    output_dir = Path(config.output_dir)
    claim_output_folder(output_dir, config, "wmdp")
    models = []
    if config.evaluate_target or not config.train:
        path = config.unlearn.model.name_or_path
        models.append({"model": "target", "path": path, "scores": score_model(config, path, output_dir / "target")})
    if config.train:
        folder = unlearn(run)
        models.append({"model": run.method, "path": str(folder / "model"),
                       "scores": score_model(config, str(folder / "model"), folder)})
    atomic_write_json(output_dir / "summary.json", {
        "benchmark": "WMDP", "tasks": list(config.downstream.tasks),
        "directions": {"wmdp_bio": "lower = forgotten (chance 0.25)", "wmdp_cyber": "lower = forgotten (chance 0.25)",
                       "mmlu": "higher = kept"},
        "models": models,
    })
    names = list(dict.fromkeys(k for m in models for k in m["scores"]))
    table = markdown_table(["model", *names], [{"model": m["model"], **m["scores"]} for m in models])
    atomic_write_text(output_dir / "results.md", table)
    return output_dir, table
