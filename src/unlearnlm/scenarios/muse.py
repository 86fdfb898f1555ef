"""MUSE (News, Books): unlearn the raw forget text, score VerbMem, KnowMem and PrivLeak.

    OUTPUT_DIR/config.yaml            the resolved MuseConfig
    OUTPUT_DIR/retrain/muse.json      the retrained model's scores (with evaluation.retrain_model)
    OUTPUT_DIR/target/muse.json       the target's scores (evaluate_target)
    OUTPUT_DIR/METHOD/                the unlearning run folder (model/, log.jsonl, ...) and its muse.json
    OUTPUT_DIR/summary.json           every model's numbers, their directions, the PrivLeak reference
    OUTPUT_DIR/results.md             the table the command prints

Each stage leaves a file whose presence means it is done, so rerunning the same command
continues where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..config import MuseConfig
from ..io import atomic_write_json, atomic_write_text, read_json
from ..tables import markdown_table
from ..training.models import load_for_inference
from .common import claim_output_folder

logger = logging.getLogger(__name__)

RESULT_FILE = "muse.json"
TABLE_COLUMNS = [("model", "model"), ("verbmem_f", "VerbMem_f ↓"), ("knowmem_f", "KnowMem_f ↓"),
                 ("knowmem_r", "KnowMem_r ↑"), ("privleak", "PrivLeak (→0)"), ("privleak_auc", "MIA AUC")]


def run_config(config: MuseConfig):
    """The unlearning run, in OUTPUT_DIR/METHOD."""
    return replace(config.unlearn, output_dir=str(Path(config.output_dir) / config.unlearn.method.replace("/", "_")))


def evaluation_source(config: MuseConfig) -> str:
    return config.evaluation.source or config.unlearn.data.source


def score_model(config: MuseConfig, model_path: str, folder: Path, sets,
                reference_auc=None, reference_name=None) -> dict:
    """MUSE's numbers for one model (read back when its muse.json is already there)."""
    from ..evaluation.muse import evaluate_muse

    path = folder / RESULT_FILE
    if path.exists():
        return read_json(path)
    model, tokenizer = load_for_inference(replace(config.unlearn.model, name_or_path=model_path))
    scores = evaluate_muse(model, tokenizer, sets, config.evaluation, reference_auc, reference_name)
    result = {"path": model_path, **scores}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result)
    return result


def run_muse(config: MuseConfig) -> tuple[Path, str]:
    """Score the retrained model and the target, unlearn, score the result; returns the output
    folder and the results table."""
    from ..evaluation.muse import load_muse_sets
    from ..methods import get_method
    from ..training.run import load_unlearning_data, unlearn

    # config is validated (unlearnlm.api.muse builds it)
    sets = load_muse_sets(config.evaluation, evaluation_source(config))  # bad files fail before any model loads
    run = run_config(config)
    if config.train:
        load_unlearning_data(run, get_method(run.method))
    output_dir = Path(config.output_dir)
    claim_output_folder(output_dir, config, "muse")

    models: list[dict] = []
    reference_auc = reference_name = None
    retrain = config.evaluation.retrain_model
    if retrain:
        result = score_model(config, retrain, output_dir / "retrain", sets)
        if "privleak_auc" in result["metrics"]:
            from ..evaluation.privacy import privleak

            reference_auc, reference_name = result["metrics"]["privleak_auc"], retrain
            # Against itself: A = A_R, privleak 0 by definition.
            result["metrics"]["privleak"] = privleak(reference_auc, reference_auc)[0]
            result["privleak_reference"] = {"model": retrain, "auc": reference_auc}
            atomic_write_json(output_dir / "retrain" / RESULT_FILE, result)
        models.append({"model": "retrain", **result})
    target = config.unlearn.model.name_or_path
    if config.evaluate_target or not config.train:
        models.append({"model": "target", **score_model(config, target, output_dir / "target", sets,
                                                        reference_auc, reference_name)})
    if config.train:
        folder = unlearn(run)
        models.append({"model": run.method, **score_model(config, str(folder / "model"), folder, sets,
                                                          reference_auc, reference_name)})
    return output_dir, write_results(models, output_dir, config)


def write_results(models: list[dict], output_dir: Path, config: MuseConfig) -> str:
    from ..evaluation.muse import DIRECTIONS

    summary = {
        "benchmark": "MUSE",
        "corpus": config.evaluation.corpus,
        "source": evaluation_source(config),
        "directions": {k: v for k, v in DIRECTIONS.items() if k in config.evaluation.metrics},
        "models": [{"model": m["model"], "path": m.get("path"), "metrics": m["metrics"],
                    "privleak_reference": m.get("privleak_reference")} for m in models],
    }
    atomic_write_json(output_dir / "summary.json", summary)
    rows = [{"model": m["model"], **m["metrics"]} for m in models]
    columns = [c for c in TABLE_COLUMNS if c[0] == "model" or any(c[0] in r for r in rows)]
    table = markdown_table([key for key, _ in columns], rows, dict(columns))
    reference = next((m.get("privleak_reference") for m in models if m.get("privleak_reference")), None)
    if reference:
        table += f"\nPrivLeak reference: {reference['model']}\n"
    for model in models:  # an undefined PrivLeak is "-" in the table, and said why here
        if (model.get("privleak_reference") or {}).get("undefined"):
            table += f"PrivLeak of {model['model']} undefined: {model['privleak_reference']['undefined']}\n"
    atomic_write_text(output_dir / "results.md", table)
    return table
