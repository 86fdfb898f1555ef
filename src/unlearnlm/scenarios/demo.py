"""``unlearnlm demo``: the paper's fictitious comparison, end to end, offline, on a CPU.

Stages (each skipped when its result already exists):

1. a fictitious world of authors (data.world), in TOFU's format, and holdout authors that no
   model sees (their own cache folder), for the membership-inference AUCs and privleak;
2. the judges: the sentence embedder and an NLI judge (the offline one is trained once, in a
   background process while stage 3 runs, and stage 4 when the methods run one at a time);
3. a target fine-tuned on every author and a retain model that never saw the forget authors,
   both cached under ``cache_dir()/demo`` by a hash of everything that made them;
4. one unlearned model per method, from the target;
5. the target, the retain model and every unlearned model evaluated as docs/formulas.md#metrics (the retain
   model's evaluation gives every other model its Forget Quality);
6. with ``run_attacks``, every unlearned model attacked (relearning, quantisation: scenarios.attacks);
   with ``method_workers`` above 1, stages 4 to 6 run per method, that many methods side by side in
   worker processes, after the target's and the retain model's evaluations;
7. the comparison table, the MU-vs-FE plot, the method x attack recovery and an HTML page (evaluation.report).

Layout of OUTPUT_DIR: ``world`` and ``target`` / ``retain`` (links into the cache), ``unlearn/<METHOD>/``
(run folders, each with ``eval/``, and ``demo.log`` when methods run side by side), ``report/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from transformers import TrainerCallback

from ..config import (
    BootstrapConfig,
    DataConfig,
    DemoConfig,
    EvalDataConfig,
    EvaluateConfig,
    FinetuneConfig,
    FinetuneDataConfig,
    UnlearnConfig,
    config_differences,
    to_dict,
    validate_config,
    without_default_sections,
)
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_text
from .attacks import attacks_of

logger = logging.getLogger(__name__)

# Bump when the code that makes the cached models changes what they are (2: fine-tuning steps
# group rows by length; 3: the world's evaluation rows name their facts).
DEMO_VERSION = 3


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _link(link: Path, target: Path) -> Path:
    """Point ``link`` at ``target`` (a cached folder); falls back to the target's own path."""
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        if link.is_symlink() or link.exists():
            if link.resolve() == target.resolve():
                return link
            if not link.is_symlink():
                raise UserError(f"{link} exists and is not a link made by the demo; choose another output_dir")
            link.unlink()
        os.symlink(target, link, target_is_directory=True)
        return link
    except OSError:
        return target


class Stages:
    """Numbered stage headers with elapsed time, so a long run says where it is."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.time()

    def begin(self, title: str) -> None:
        self.done += 1
        elapsed = time.time() - self.started
        logger.info(f"\n[{self.done}/{self.total}] {title}  (elapsed {int(elapsed // 60):02d}:{int(elapsed % 60):02d})")


def method_slug(method: str) -> str:
    return method.lower().replace("+", "-")


def build_world(config: DemoConfig, cache: Path) -> Path:
    from ..data.world import write_world

    params = {"seed": config.seed, "authors": config.authors, "questions": config.questions_per_author,
              "version": DEMO_VERSION}
    folder = cache / f"world-{_digest(params)}"
    manifest = folder / "world.json"
    if not manifest.exists():
        counts = write_world(folder, seed=config.seed, authors=config.authors,
                             questions_per_author=config.questions_per_author)
        atomic_write_json(manifest, {"params": params, "rows": counts})  # written last: the world is whole
    return folder


def build_holdout(config: DemoConfig, cache: Path) -> Path:
    """Holdout authors for the membership-inference AUCs and privleak: of the world's kind, never
    seen by the target or the retain model, in a cache folder of their own (the world's folder,
    whose digest names the cached models, is left as it is)."""
    from ..data.world import write_holdout

    params = {"seed": config.seed, "authors": config.authors, "questions": config.questions_per_author,
              "holdout_authors": config.holdout_authors, "version": DEMO_VERSION}
    folder = cache / f"holdout-{_digest(params)}"
    manifest = folder / "manifest.json"
    if not manifest.exists():
        rows = write_holdout(folder, config.seed, config.authors, config.questions_per_author, config.holdout_authors)
        atomic_write_json(manifest, {"params": params, "rows": rows})  # written last: the folder is whole
    return folder


def finetune_recipe(config: DemoConfig, cache: Path, world: Path, name: str, train: list[str]) -> FinetuneConfig:
    """Fine-tuning ``config.model`` on ``train`` splits of the world, in a cache folder named by
    a hash of everything that makes the model."""
    from ..training.models import resolve_model_path

    recipe = FinetuneConfig(
        output_dir="",
        model=config.model,
        data=FinetuneDataConfig(source=str(world), train=train),
        training=config.finetune_training,
    )
    identity = {k: v for k, v in without_default_sections(to_dict(recipe), recipe).items() if k != "output_dir"}
    # Settings that change how the same numbers are computed, not which: a progress bar,
    # projecting only the answers onto the vocabulary, experiment tracking.
    for key in ("progress", "answer_logits_only", "report_to"):
        identity["training"].pop(key, None)
    # The folder the name resolves to: an embedded model's names its conversion version, so a
    # new conversion is a new recipe.
    identity["base_model_folder"] = resolve_model_path(config.model.name_or_path)
    key = _digest({"recipe": identity, "version": DEMO_VERSION})
    return replace(recipe, output_dir=str(cache / f"{name}-{key}"))


def is_finished(recipe: FinetuneConfig) -> bool:
    from ..training.run import TRAIN_SUMMARY

    return (Path(recipe.output_dir) / TRAIN_SUMMARY).exists()


def load_judges(config: DemoConfig, background: Optional[JudgeInBackground] = None):
    from ..judges.loading import Judges, load_embedder, load_nli_judge

    embedder = load_embedder(config.evaluation.judges.embedder)
    if background is not None:
        background.wait()
    nli = load_nli_judge(config.evaluation.judges.nli)
    if nli is None and config.train_judge and config.evaluation.judges.nli in ("auto", "offline"):
        from ..judges.offline import load_offline_nli_judge

        nli = load_offline_nli_judge(train_if_missing=True)
    return Judges(embedder, nli)


def judge_needs_training(config: DemoConfig) -> bool:
    """Whether the offline NLI judge will be trained: no NLI judge loads and none is cached."""
    from ..judges.loading import load_nli_judge

    nli = config.evaluation.judges.nli
    return config.train_judge and nli in ("auto", "offline") and load_nli_judge(nli) is None


class JudgeInBackground:
    """``unlearnlm train-judge`` in a child process, while this one fine-tunes and unlearns.

    On a 2-core CPU two single-threaded jobs get more done than one job on both cores (small
    matrices parallelise poorly; docs/performance.md), and the judge is needed only by the
    evaluations."""

    def __init__(self, log: Path, command: Optional[list[str]] = None):
        import subprocess
        import sys

        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._output = open(log, "w", encoding="utf-8")
        command = command or [sys.executable, "-m", "unlearnlm", "train-judge", "--threads", "1"]
        self.process = subprocess.Popen(command, stdout=self._output, stderr=subprocess.STDOUT)

    def wait(self) -> None:
        if self.process.poll() is None:
            logger.info("waiting for the offline NLI judge to finish training (log: %s)", self.log)
        code = self.process.wait()
        self._output.close()
        if code != 0:
            tail = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
            raise UserError(f"training the offline NLI judge failed (exit code {code}); the end of {self.log}:\n"
                            + "\n".join(tail))
        logger.info("the offline NLI judge is trained:\n  " + "\n  ".join(self.summary_lines()))

    def summary_lines(self) -> list[str]:
        """The child's printed lines without its progress bars (each bar's last state included)."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        lines = [line.rsplit("\r", 1)[-1].strip() for line in text.splitlines()]
        return [line for line in lines if line and "%|" not in line]

    def finished(self) -> bool:
        return self.process.poll() is not None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        if not self._output.closed:
            self._output.close()


class ReclaimCores(TrainerCallback):
    """Once the background judge is done, the next step runs on ``threads``
    threads again (set here, on the training thread: a thread count is per thread)."""

    def __init__(self, background: Optional[JudgeInBackground], threads: int):
        self.background, self.threads = background, threads

    def on_step_begin(self, args, state, control, **kwargs):
        import torch

        if self.background is not None and torch.get_num_threads() != self.threads and self.background.finished():
            torch.set_num_threads(self.threads)


def demo_evaluation_config(config: DemoConfig, world: Path, model_dir: Path, output: Path,
                           retain_eval: Path | None, holdout: Path | None = None) -> EvaluateConfig:
    return replace(
        config.evaluation,
        model=replace(config.model, name_or_path=str(model_dir)),
        scenario="tofu",
        data=EvalDataConfig(source=str(world), forget=config.forget_split, task_id=["1"],
                            holdout=str(holdout) if holdout else None),
        retain_eval=str(retain_eval) if retain_eval else None,
        output_dir=str(output),
    )


def evaluate_once(config: EvaluateConfig, judges) -> dict:
    """Evaluate unless this folder already holds the evaluation of the same config. Another
    bootstrap setting needs no new evaluation: the intervals are recomputed from the records."""
    import yaml

    from ..config import save_config
    from ..evaluation.evaluate import evaluate_model, intervals_command, resolve_config
    from ..evaluation.runs import EVAL_SUMMARY, load_summary

    config = resolve_config(config)
    folder = Path(config.output_dir)
    if (folder / EVAL_SUMMARY).exists() and config_differences(folder, config) == []:
        logger.info("%s already holds this evaluation", folder)
        summary = load_summary(folder)
        saved = folder / "config.yaml"
        previous = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("bootstrap")
        stale = ("intervals" in summary) != (config.bootstrap.samples > 0)
        if previous != to_dict(config)["bootstrap"] or stale:
            summary = intervals_command(folder, config.bootstrap)
            save_config(config, saved)
        return summary
    return evaluate_model(config, judges=judges)


# Every method `methods=all` runs: the paper's, then the field's.
ALL_METHODS = ["ME+GD", "IDK+AP", "GA+GD", "NPO+GD", "DPO+GD", "IDK+GD", "GA+KL", "NPO+KL", "DPO+KL", "IDK+KL",
               "LLMU", "SimNPO+GD", "RMU", "UNDIAL", "WGA+GD", "SatImp+GD", "CE-U", "PDU+GD", "AltPO+GD",
               "TaskVector"]


def demo_methods(config: DemoConfig) -> list[str]:
    """The methods to run: ``config.methods`` with "all" expanded; a bad name is a user error."""
    from ..methods.registry import get_method

    names: list[str] = []
    for name in config.methods:
        for one in ALL_METHODS if name.strip().lower() == "all" else [name]:
            if get_method(one).name not in [get_method(n).name for n in names]:
                names.append(one)
    for name in config.method_args:
        get_method(name)
        if not isinstance(config.method_args[name], dict):
            raise UserError(f"method_args.{name} holds the settings of {name}: write method_args.{name}.NAME=value")
    return names


def method_args_for(config: DemoConfig, method: str) -> dict:
    from ..methods.registry import get_method

    wanted = get_method(method).name
    return next((dict(args) for name, args in config.method_args.items() if get_method(name).name == wanted), {})


def unlearn_config(config: DemoConfig, world: Path, target: Path, method: str, output: Path) -> UnlearnConfig:
    return UnlearnConfig(
        method=method,
        method_args=method_args_for(config, method),
        output_dir=str(output),
        model=replace(config.model, name_or_path=str(target)),
        data=DataConfig(
            source=str(world),
            forget=config.forget_split,
            retain=config.retain_split,
            task_id=["1"],
            # The world's retainXX already holds the other tasks' authors.
            retain_includes_later_tasks=False,
        ),
        training=config.unlearn_training,
    )


def check_disjoint(world: Path, config: DemoConfig) -> None:
    """The retain model must never see a forget question, or Forget Quality means nothing."""
    from ..data.records import load_split, select_tasks

    forget = {r["question"] for r in select_tasks(load_split(config.forget_split, str(world)), ["1"])}
    overlap = forget & {r["question"] for r in load_split(config.retain_split, str(world))}
    if overlap:
        raise UserError(
            f"retain_split {config.retain_split} holds {len(overlap)} questions of {config.forget_split} task 1; "
            "pick a retain split without the forget authors (retain90 for forget10)"
        )


def run_folders(config: DemoConfig, run_dir: Path) -> list[Path]:
    """A method's run folders: one per seed with seeds (the first is the one attacked), else the run."""
    from ..evaluation.seeds import seed_folders

    return [folder for _, folder in seed_folders(run_dir)] if config.seeds else [run_dir]


def evaluate_method(config: DemoConfig, world: Path, holdout: Path, retain_eval: Path, run_dir: Path,
                    judges) -> None:
    """Evaluate a method's run (each seed's, then their aggregate)."""
    from ..evaluation.seeds import aggregate_seeds

    for folder in run_folders(config, run_dir):
        evaluate_once(demo_evaluation_config(config, world, folder / "model", folder / "eval", retain_eval, holdout),
                      judges)
    if config.seeds:
        aggregate_seeds(run_dir)


def method_worker_count(config: DemoConfig, methods: list[str]) -> int:
    """How many methods run side by side: ``config.method_workers``, or (0) two on a CPU whose
    torch has at least two threads, one on a GPU (where one process already fills the device)."""
    import torch

    if config.method_workers:
        return max(1, min(config.method_workers, len(methods)))
    if torch.cuda.is_available() or torch.get_num_threads() < 2 or len(methods) < 2:
        return 1
    return 2


# ---- methods side by side: one worker process each, one share of the threads ------------------------

_WORKER_JUDGES = None


def _start_worker(config: DemoConfig, threads: int) -> None:
    """A worker's start: its threads, unlearnlm's messages on its stdout, the judges loaded once."""
    import sys

    import torch

    global _WORKER_JUDGES
    torch.set_num_threads(threads)
    package = logging.getLogger("unlearnlm")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass
    _WORKER_JUDGES = load_judges(config)


def _into_log(log: Path) -> None:
    """Send this worker's stdout and stderr (messages, progress bars, warnings) to ``log``: two
    methods' bars on one terminal would be unreadable."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)


def method_pipeline(job: tuple) -> dict:
    """One method's whole share of the demo in a worker: unlearning, evaluation, attacks (each
    skipped when its result exists). ``job``: (config, method, world, target, holdout, retain_eval,
    run_dir). Returns the method, the seconds of each stage and the attacks' summary; a user
    error names the method and its log."""
    from ..training.run import unlearn
    from .attacks import run_attacks

    config, method, world, target, holdout, retain_eval, run_dir = job
    log = run_dir / "demo.log"
    _into_log(log)
    seconds, started = {}, time.time()
    try:
        unlearn(replace(unlearn_config(config, world, target / "model", method, run_dir), seeds=config.seeds))
        seconds["unlearning"], started = time.time() - started, time.time()
        evaluate_method(config, world, holdout, retain_eval, run_dir, _WORKER_JUDGES)
        seconds["evaluation"], started = time.time() - started, time.time()
        attacks = None
        if config.run_attacks:
            attacks = run_attacks(config.attack, run_folders(config, run_dir)[0], judges=_WORKER_JUDGES)
            seconds["attacks"] = time.time() - started
    except UserError as error:
        raise UserError(f"{method}: {error} (its log: {log})") from None
    return {"method": method, "seconds": seconds, "attacks": attacks}


def methods_side_by_side(config: DemoConfig, methods: list[str], workers: int, world: Path, target: Path,
                         holdout: Path, retain_eval: Path, output: Path, stages: Stages) -> None:
    """Every method's unlearning, evaluation and attacks, ``workers`` methods at a time, each
    worker with an equal share of this process's threads; a line (and the attack table) per
    method as it finishes, its whole log in ``unlearn/METHOD/demo.log``. The first failure stops
    every worker at once."""
    import multiprocessing

    import torch

    from .attacks import format_attack_table

    threads = max(1, torch.get_num_threads() // workers)
    logger.info(f"{len(methods)} methods, {workers} side by side ({threads} thread{'s' if threads > 1 else ''} each); "
                f"each method's log: {output / 'unlearn' / 'METHOD' / 'demo.log'}")
    jobs = [(config, method, world, target, holdout, retain_eval, output / "unlearn" / method_slug(method))
            for method in methods]
    # spawn, not fork: this process holds threads (torch's, tokenizers') that a fork would copy
    # mid-state. Leaving the block, by an error too, terminates the workers.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker,
                                                    initargs=(config, threads)) as pool:
        for result in pool.imap_unordered(method_pipeline, jobs):
            times = ", ".join(f"{stage} {int(s // 60)} min {int(s % 60)} s" if s >= 60 else f"{stage} {s:.0f} s"
                              for stage, s in result["seconds"].items())
            stages.begin(f"{result['method']} done: {times}")
            if result["attacks"] is not None:
                logger.info(format_attack_table(result["attacks"]))


def attack_methods(config: DemoConfig, unlearned: list[tuple[str, Path]], judges, stages: Stages) -> None:
    """``unlearnlm attack`` on every unlearned model (the target's evaluation is the cached one)."""
    from .attacks import format_attack_table, run_attacks

    for method, run_dir in unlearned:
        stages.begin(f"attacking {method} ({', '.join(config.attack.attacks)})")
        summary = run_attacks(config.attack, run_folders(config, run_dir)[0], judges=judges)
        logger.info(format_attack_table(summary))


def run_demo(config: DemoConfig) -> Path:
    import torch

    from ..evaluation.report import write_report
    from ..training.models import cache_dir, resolve_model_path
    from ..training.run import finetune, unlearn

    validate_config(FinetuneConfig(training=config.finetune_training))
    methods = demo_methods(config)
    for method in methods:
        validate_config(UnlearnConfig(method=method, method_args=method_args_for(config, method),
                                      training=config.unlearn_training, seeds=config.seeds))
    if not methods:
        raise UserError("methods is empty: name at least one unlearning method (or all)")
    if config.run_attacks:
        attacks_of(config.attack, prefix="attack.")  # the sections were checked with the DemoConfig
        if "probes" in config.attack.attacks:
            from ..evaluation.probes import load_probes

            load_probes(config.attack.probes.templates, config.attack.probes.names)
    output = Path(config.output_dir)
    cache = cache_dir() / "demo"
    workers = method_worker_count(config, methods)
    per_method = 1 if workers > 1 else (3 if config.run_attacks else 2)
    stages = Stages(total=6 + per_method * len(methods))

    stages.begin("the embedded model and the fictitious world")
    resolve_model_path(config.model.name_or_path)  # converts the embedded model once
    world = build_world(config, cache)  # every config names the cached folder: stable hashes
    _link(output / "world", world)
    holdout = build_holdout(config, cache)
    check_disjoint(world, config)
    target_recipe = finetune_recipe(config, cache, world, "target", ["full"])
    retain_recipe = finetune_recipe(config, cache, world, "retain", [config.retain_split])
    stages.begin("the judges (the offline NLI judge is trained once, a few minutes)")
    background, threads = None, torch.get_num_threads()
    fine_tuning = not (is_finished(target_recipe) and is_finished(retain_recipe))
    if config.judge_in_background and fine_tuning and judge_needs_training(config):
        # The judge is needed only by the evaluations, which come last: it trains beside the
        # fine-tuning (and the unlearning, when the methods run one at a time), one core each.
        background = JudgeInBackground(cache / "judge-training.log")
        torch.set_num_threads(1)
        logger.info("the offline NLI judge trains in a background process meanwhile (log: %s)", background.log)
        judges = None
    else:
        judges = load_judges(config)

    # Once the judge is done, the next training step takes every core back.
    callbacks = [ReclaimCores(background, threads)] if background is not None else []
    unlearned = [(method, output / "unlearn" / method_slug(method)) for method in methods]
    try:
        stages.begin("fine-tuning the target on every author")
        cached_target = finetune(target_recipe, callbacks).resolve()
        target = _link(output / "target", cached_target)
        stages.begin(f"fine-tuning the retain model on {config.retain_split} (never sees the forget authors)")
        cached_retain = finetune(retain_recipe, callbacks).resolve()
        retain = _link(output / "retain", cached_retain)
        if workers == 1:
            for method, run_dir in unlearned:
                stages.begin(f"unlearning with {method}" + (f" (seeds {config.seeds})" if config.seeds else ""))
                unlearn(replace(unlearn_config(config, world, target / "model", method, run_dir), seeds=config.seeds),
                        callbacks)
        torch.set_num_threads(threads)  # the judge's loading and the evaluations use every core
        if background is not None:
            judges = load_judges(config, background)
    finally:
        torch.set_num_threads(threads)
        if background is not None:
            background.stop()  # only does something when this process is interrupted
    names = judges.names()
    logger.info(f"embedder: {names['embedder'] or 'none'}; nli: {names['nli'] or 'none (entailment unavailable)'}")

    # The cached models' evaluations live in the cache too: named by their cache paths, they are
    # the same evaluation whatever OUTPUT_DIR links to them, and a second demo skips them.
    stages.begin("evaluating the retain model")
    evaluate_once(demo_evaluation_config(config, world, cached_retain / "model", cached_retain / "eval", None,
                                         holdout), judges)
    retain_eval = cached_retain / "eval"
    stages.begin("evaluating the target")
    evaluate_once(demo_evaluation_config(config, world, cached_target / "model", cached_target / "eval", retain_eval,
                                         holdout), judges)
    for line in forget_fact_lines(cached_target / "eval", retain_eval):
        logger.info(line)
    if workers > 1:
        methods_side_by_side(config, methods, workers, world, target, holdout, retain_eval, output, stages)
    else:
        for method, run_dir in unlearned:
            stages.begin(f"evaluating {method}")
            evaluate_method(config, world, holdout, retain_eval, run_dir, judges)
        if config.run_attacks:
            attack_methods(config, unlearned, judges, stages)
    method_evals = {method: [folder / "eval" for folder in run_folders(config, run_dir)]
                    for method, run_dir in unlearned}
    runs = [target, retain] + [run_dir for _, run_dir in unlearned]

    logger.info("")
    page = write_report([str(r) for r in runs], output / "report", baseline="target")
    lines = forget_fact_lines(cached_target / "eval", retain_eval) + [""] + paper_claims(
        method_evals, cached_target / "eval", config.evaluation.bootstrap)
    atomic_write_text(output / "report" / "claims.md", "\n".join(lines) + "\n")
    logger.info("\n" + "\n".join(lines))
    elapsed = time.time() - stages.started
    logger.info(f"\nreport: {page}  (demo took {int(elapsed // 60)} min {int(elapsed % 60)} s)")
    return page


# ---- what the target knows ---------------------------------------------------------------------------

# Unlearning what the target never learnt measures nothing: below this share of forget facts
# stated, the demo says so.
TARGET_FACT_RECALL = 0.8


def forget_fact_lines(target_eval: Path, retain_eval: Path) -> list[str]:
    """How many forget facts the target and the retain model state, with their intervals: the
    target must know what it is asked to forget, the retain model (never trained on them) not."""
    from ..evaluation.runs import interval_values, load_summary
    from ..evaluation.statistics import format_interval

    def said(folder: Path) -> tuple[Optional[float], str]:
        summary = load_summary(folder)
        value = summary["sets"].get("forget", {}).get("metrics", {}).get("fact_recall")
        if value is None:
            return None, "unavailable (the forget rows name no facts)"
        interval = interval_values(summary).get("forget/fact_recall")
        return value, f"{value:.2f}" + (f" {format_interval(interval)}" if interval else "")

    target, target_text = said(target_eval)
    _, retain_text = said(retain_eval)
    lines = [f"Forget facts stated (greedy answers naming the true fact): target {target_text}, "
             f"retain model {retain_text}."]
    if target is not None and target < TARGET_FACT_RECALL:
        lines.append(f"Note: the target states fewer than {TARGET_FACT_RECALL:.0%} of the facts it is asked to "
                     "forget; forgetting what was never learnt is partly measured on the answers' wording.")
    return lines


# ---- the paper's claims, at this scale ---------------------------------------------------------------


def _difference(a, b, key: str, level: float) -> Optional[dict]:
    from ..evaluation.statistics import paired_difference

    return paired_difference(a, b, level).get(key)


def _said(result: Optional[dict]) -> str:
    if not result or not result["interval"]:
        return "unavailable"
    from ..evaluation.statistics import format_interval

    return f"{result['difference']:+.4f} {format_interval(result['interval'], signed=True)}"


def paper_claims(method_evals: dict, target_eval: Path, settings: Optional[BootstrapConfig] = None) -> list[str]:
    """Which of the paper's headline claims this run tells apart: each claim's paired bootstrap
    differences (against the target or between methods, on the same resampled rows), and whether
    their intervals exclude 0. Methods the run did not include are said so.

    ``method_evals``: method -> its evaluation folder, or a list of them (one per seed: the seeds'
    pooled replicates). ``settings``: the bootstrap's (the evaluations' own by default)."""
    from ..evaluation.evaluate import scoring
    from ..evaluation.runs import load_summary, read_set_rows
    from ..evaluation.statistics import align_rows, bootstrap, percent, pooled_over_seeds

    settings = settings or BootstrapConfig()
    samples, seed, level = settings.samples, settings.seed, settings.level

    base_rows = read_set_rows(target_eval)
    score = scoring(load_summary(target_eval).get("scenario", "tofu"))
    target = bootstrap(base_rows, score, samples, seed)

    def replicates(folders):
        folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
        each = [bootstrap(align_rows(read_set_rows(f), base_rows, what="the target"), score, samples, seed)
                for f in folders]
        return each[0] if len(each) == 1 else pooled_over_seeds(each)

    boot = {m: replicates(folders) for m, folders in method_evals.items()}
    lines = [f"The paper's claims at this scale (paired bootstrap, {percent(level)} intervals, {samples} resamples; "
             "distinguishable = the interval excludes 0):"]

    def verdict(holds: bool, told_apart: bool) -> str:
        if not told_apart:
            return "not distinguishable at this scale"
        return "distinguishable, as claimed" if holds else "distinguishable, against the claim"

    def missing(*methods: str) -> Optional[str]:
        absent = [m for m in methods if m not in boot]
        return f"not run here ({', '.join(absent)} not among the methods)" if absent else None

    # 1. ME+GD reaches the highest FE while MU stays near the target's.
    claim = "ME+GD reaches the highest FE"
    if missing("ME+GD") or len(boot) < 2:
        lines.append(f"- {claim}: {missing('ME+GD') or 'not run here (one method only)'}")
    else:
        parts, all_above, all_apart = [], True, True
        for other in (m for m in boot if m != "ME+GD"):
            result = _difference(boot["ME+GD"], boot[other], "FE", level)
            parts.append(f"vs {other} {_said(result)}")
            all_above &= bool(result) and result["difference"] > 0
            all_apart &= bool(result) and result["distinguishable"]
        lines.append(f"- {claim}: FE difference {'; '.join(parts)}: {verdict(all_above, all_apart)}")
        result = _difference(boot["ME+GD"], target, "MU", level)
        stays = bool(result) and not (result["distinguishable"] and result["difference"] < 0)
        lines.append(f"- ME+GD's MU stays near the target's: MU - target {_said(result)}: "
                     + ("no distinguishable drop" if stays else "a distinguishable drop, against the claim"))
    # 2. GA+GD and DPO+GD collapse MU (on the larger forget sets).
    for method in ("GA+GD", "DPO+GD"):
        claim = f"{method} collapses MU"
        if missing(method):
            lines.append(f"- {claim}: {missing(method)}")
            continue
        result = _difference(boot[method], target, "MU", level)
        lines.append(f"- {claim}: MU - target {_said(result)}: "
                     + verdict(bool(result) and result["difference"] < 0, bool(result) and result["distinguishable"]))
    # 3. NPO+GD's FE stays low (below ME+GD's).
    claim = "NPO+GD's FE stays low (below ME+GD's)"
    if missing("NPO+GD", "ME+GD"):
        lines.append(f"- {claim}: {missing('NPO+GD', 'ME+GD')}")
    else:
        result = _difference(boot["NPO+GD"], boot["ME+GD"], "FE", level)
        lines.append(f"- {claim}: FE - ME+GD's {_said(result)}: "
                     + verdict(bool(result) and result["difference"] < 0, bool(result) and result["distinguishable"]))
    # 4. IDK+AP's MU stays stable.
    claim = "IDK+AP's MU stays stable"
    if missing("IDK+AP"):
        lines.append(f"- {claim}: {missing('IDK+AP')}")
    else:
        result = _difference(boot["IDK+AP"], target, "MU", level)
        stays = bool(result) and not (result["distinguishable"] and result["difference"] < 0)
        lines.append(f"- {claim}: MU - target {_said(result)}: "
                     + ("no distinguishable drop" if stays else "a distinguishable drop, against the claim"))
    lines.append("- in continual unlearning the baselines' MU decays while ME+GD and IDK+AP hold: "
                 "not part of the demo (see `unlearnlm continual`)")
    return lines
