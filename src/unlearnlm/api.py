"""The Python API: one function per command (``unlearnlm.finetune``, ``unlearnlm.unlearn``,
``unlearnlm.evaluate``, ``unlearnlm.attack``, ``unlearnlm.continual``, ... ``unlearnlm.demo``).

Each does what its command does, from a notebook or a script, and the command itself calls it:
the CLI parses its arguments into a preset name and ``key=value`` overrides and hands them here.
Most return a ``Result``: the folder written and its numbers. A run is described as on the
command line: a preset (or YAML file), then a config object, then keyword overrides, each on top
of the one before::

    import unlearnlm

    run = unlearnlm.unlearn(preset="tofu", model="runs/target/model", method="IDK+AP",
                            **{"training.lr": 1e-5, "data.task_id": ["1"]})
    scores = unlearnlm.evaluate(run.folder)
    print(scores["MU"], scores["FE"])

A keyword is a config key, dotted for nested ones (``training.lr``); ``model`` may also be a
plain model name or folder (it sets ``model.name_or_path``). Values keep their Python types
(lists, numbers, booleans) or may be strings as on the command line. Every mistake is a one-line
``unlearnlm.errors.UserError`` raised before any model loads. The config is validated once, here
at the boundary (training runs validate their own, as scenarios call them with derived configs).
Messages go through ``logging`` (``logging.basicConfig(level=logging.INFO)`` shows them); nothing
is printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar

from .config import (
    AttackConfig,
    BootstrapConfig,
    EvaluateConfig,
    FinetuneConfig,
    PromptFormatConfig,
    UnlearnConfig,
    _deep_merge,
    from_dict,
    resolve_preset,
    to_dict,
    validate_config,
)
from .errors import UserError
from .io import read_json

C = TypeVar("C")


@dataclass(frozen=True)
class Result:
    """What a call wrote: its folder, and the numbers it wrote there (``train_summary.json`` of a
    training run, ``summary.json`` of an evaluation). ``result["MU"]`` reads a number."""

    folder: Path
    numbers: dict
    text: str = ""  # what the command shows besides (a results table), if anything

    def __getitem__(self, key: str) -> Any:
        return self.numbers[key]


def build_config(cls: type[C], preset: Optional[str] = None, config: Optional[C] = None, *, validate: bool = True,
                 **overrides: Any) -> C:
    """``cls``'s defaults <- ``preset`` (a shipped preset or YAML file) <- ``config`` <- ``overrides``,
    validated (unless ``validate=False``: for a caller that validates it itself). ``overrides`` are
    config keys, dotted for nested ones (``training.lr``)."""
    data: dict[str, Any] = resolve_preset(preset) if preset else {}
    if config is not None:
        if not isinstance(config, cls):
            raise UserError(f"config must be a {cls.__name__}, got {type(config).__name__}")
        data = _deep_merge(data, to_dict(config))
    for key, value in overrides.items():
        if key == "model" and isinstance(value, (str, Path)):
            key, value = "model.name_or_path", str(value)
        node = data
        parts = key.split(".")
        if not all(parts):
            raise UserError(f"override '{key}' has an empty key")
        for part in parts[:-1]:
            existing = node.get(part)
            node[part] = dict(existing) if isinstance(existing, dict) else {}
            node = node[part]
        node[parts[-1]] = str(value) if isinstance(value, Path) else value
    built = from_dict(cls, data)
    if validate:
        validate_config(built)
    return built


RESERVED = ("config", "preset", "callbacks", "judges", "validate")  # keywords of these functions, not config keys


def command_line_overrides(items: Sequence[str]) -> dict[str, str]:
    """The command line's ``key=value`` items as this API's keyword overrides (dotted keys)."""
    from .config import flatten_keys, parse_overrides

    overrides = flatten_keys(parse_overrides(list(items)))
    if "model" in overrides:  # model=NAME, as in this API
        overrides["model.name_or_path"] = overrides.pop("model")
    reserved = [key for key in overrides if key in RESERVED]
    if reserved:
        raise UserError(f"unknown config key '{reserved[0]}'")
    return overrides


def _numbers(folder: Path, *names: str) -> dict:
    """The first of ``folder``'s summary files that exists, read; {} when none does."""
    for name in names:
        if (folder / name).is_file():
            return read_json(folder / name)
    return {}


def finetune(config: Optional[FinetuneConfig] = None, *, preset: Optional[str] = None, callbacks=(),
             **overrides: Any) -> Result:
    """Supervised fine-tuning (``unlearnlm finetune``); ``callbacks`` are more TrainerCallbacks."""
    from .training.run import TRAIN_SUMMARY
    from .training.run import finetune as run_finetune

    # training.run.finetune validates the config itself, before any model loads
    folder = run_finetune(build_config(FinetuneConfig, preset, config, validate=False, **overrides), callbacks)
    return Result(folder, read_json(folder / TRAIN_SUMMARY))


def unlearn(config: Optional[UnlearnConfig] = None, *, preset: Optional[str] = None, callbacks=(),
            **overrides: Any) -> Result:
    """Unlearning (``unlearnlm unlearn``), with the per-epoch evaluation when ``eval_every_epoch``;
    ``callbacks`` are more TrainerCallbacks. With ``seeds``: one run per seed, and the numbers are
    OUTPUT_DIR/seeds.json (the text: the seeds' per-epoch results, when evaluated per epoch)."""
    from .evaluation.callback import epoch_evaluation
    from .training.run import SEEDS, TRAIN_SUMMARY
    from .training.run import unlearn as run_unlearn

    # training.run.unlearn validates the config itself (and resolves the method), before any model loads
    built = build_config(UnlearnConfig, preset, config, validate=False, **overrides)
    extra = list(callbacks)
    folder = run_unlearn(built, lambda run: [*epoch_evaluation(run), *extra])
    if not built.seeds:
        return Result(folder, read_json(folder / TRAIN_SUMMARY))
    text = ""
    if built.eval_every_epoch:
        from .evaluation.seeds import aggregate_seeds, format_seeds

        text = format_seeds(aggregate_seeds(folder, built.evaluation.bootstrap))
    return Result(folder, read_json(folder / SEEDS), text)


def evaluate(model: Optional[str | Path] = None, config: Optional[EvaluateConfig] = None, *,
             preset: Optional[str] = None, **overrides: Any) -> Result:
    """Evaluation (``unlearnlm evaluate MODEL``): ``model`` is a model folder, a hub name, or an
    unlearning run folder (evaluated into RUN/eval with the run's own data)."""
    from .evaluation.evaluate import evaluate_command
    from .evaluation.runs import run_folder_of
    from .evaluation.seeds import evaluate_seeds, is_seeds_folder

    built = build_config(EvaluateConfig, preset, config, **overrides)
    argument = str(model) if model is not None else None
    # A folder of one run per seed (and not itself a run) is evaluated seed by seed, then aggregated.
    if argument and Path(argument).is_dir() and is_seeds_folder(argument) and run_folder_of(argument) is None:
        summary = {**evaluate_seeds(built, Path(argument)), "output_dir": argument}
    else:
        summary = evaluate_command(built, argument)
    return Result(Path(summary["output_dir"]), summary)


def attack(run: str | Path, config: Optional[AttackConfig] = None, *, preset: Optional[str] = None, judges=None,
           **overrides: Any) -> Result:
    """Attack an evaluated unlearning run (``unlearnlm attack RUN``): RUN/attacks and its summary;
    the text is the recovery table. ``judges``: already loaded ones (else the evaluation's)."""
    from .scenarios.attacks import ATTACKS_DIR, format_attack_table, run_attacks

    summary = run_attacks(build_config(AttackConfig, preset, config, **overrides), run, judges=judges)
    return Result(Path(summary["run"]) / ATTACKS_DIR, summary, format_attack_table(summary))


def report(runs: Sequence[str | Path], output: str | Path = "report", *, baseline: Optional[str] = None) -> Path:
    """Compare evaluated runs (``unlearnlm report``): table, plots and HTML page in ``output``;
    returns the page. ``baseline``: a run every other is compared with, pairwise."""
    from .evaluation.report import write_report
    from .io import check_output_path

    check_output_path(str(output), "--output")
    if len(runs) == 1 and baseline is None:
        from .scenarios.sweep import is_study_folder, write_sweep_report

        if is_study_folder(runs[0]):  # a sweep's folder: its trials and its choice
            return Path(write_sweep_report(str(runs[0]), str(output)))
    return Path(write_report([str(r) for r in runs], str(output), baseline=baseline))


def intervals(folder: str | Path, **settings: Any) -> Result:
    """Bootstrap intervals for a finished evaluation (``unlearnlm intervals``), from its records;
    ``settings`` are BootstrapConfig's (samples, seed, level). The text is its table."""
    from .evaluation.evaluate import format_table, intervals_command

    bootstrap = build_config(BootstrapConfig, None, None, **settings)  # BootstrapConfig.validate
    summary = intervals_command(folder, bootstrap)
    return Result(Path(summary.get("output_dir") or folder), summary, format_table(summary))


def scenario(name: str, config: Any = None, *, preset: Optional[str] = None, **overrides: Any) -> Result:
    """Run scenario ``name`` (``unlearnlm NAME``, see ``scenarios.registry.SCENARIOS``) on its config
    section, built as every command's: preset <- config object <- overrides."""
    from .scenarios.registry import get_scenario, run_scenario

    built = build_config(get_scenario(name).config, preset, config, **overrides)
    written, table = run_scenario(name, built)
    folder = Path(getattr(built, "output_dir", written))
    return Result(folder, _numbers(folder, "summary.json"), table)


def continual(config: Any = None, *, preset: Optional[str] = None, **overrides: Any) -> Result:
    """Unlearn tasks 1..N in turn, evaluating after each (``unlearnlm continual``)."""
    return scenario("continual", config, preset=preset, **overrides)


def real_world(config: Any = None, *, preset: Optional[str] = None, **overrides: Any) -> Result:
    """Unlearn real people from an instruction model (``unlearnlm real-world``)."""
    return scenario("real-world", config, preset=preset, **overrides)


def muse(config: Any = None, *, preset: Optional[str] = None, **overrides: Any) -> Result:
    """MUSE News/Books (``unlearnlm muse``); the text is the results table."""
    return scenario("muse", config, preset=preset, **overrides)


def wmdp(config: Any = None, *, preset: Optional[str] = None, **overrides: Any) -> Result:
    """WMDP (``unlearnlm wmdp``); the text is the results table."""
    return scenario("wmdp", config, preset=preset, **overrides)


def build_forget_set(config: Any = None, *, preset: Optional[str] = None, **overrides: Any) -> Result:
    """Ask a model about entities; write forget/neighbour sets from its answers (``unlearnlm build-forget-set``)."""
    return scenario("build-forget-set", config, preset=preset, **overrides)


def demo(config: Any = None, *, preset: Optional[str] = None, quick: bool = False, full: bool = False,
         **overrides: Any) -> Result:
    """The paper's comparison on the embedded model (``unlearnlm demo``); ``quick``: the smoke preset,
    ``full``: every method, every attack, three seeds."""
    if sum(map(bool, (quick, full, preset))) > 1:
        raise UserError("--quick and --full are presets themselves; use one of --quick, --full or --config")
    return scenario("demo", config, preset="demo-quick" if quick else "demo-full" if full else preset, **overrides)


def show_format(model: str | Path, question: str = "What is the full name of the author born in Kuwait City?",
                answer: str = "The author's full name is Basil Mahfouz Al-Kuwaiti.", *,
                trust_remote_code: bool = False, **settings: Any) -> dict:
    """How a QA pair becomes tokens for ``model`` (``unlearnlm show-format``): token ids, tokens,
    label mask and generation prompt. ``settings``: model.prompt_format's keys (kind=tags ...)."""
    from .config import ModelConfig, validate_prompt_format
    from .training.models import load_prompt_format, load_tokenizer

    setting = from_dict(PromptFormatConfig, dict(settings), prefix="model.prompt_format.")
    validate_prompt_format(setting)  # before the tokenizer loads
    model_config = ModelConfig(name_or_path=str(model), trust_remote_code=trust_remote_code, prompt_format=setting)
    tokenizer = load_tokenizer(model_config, require_model=False)
    formatter = load_prompt_format(model_config, tokenizer)
    return {"model": str(model), **formatter.describe(question, answer)}


def make_world(output_dir: str | Path, **settings: Any) -> dict[str, int]:
    """Write a seeded fictitious world of authors in TOFU's format (``unlearnlm make-world``);
    returns the rows written per file. ``settings``: seed, authors, questions_per_author."""
    from .data.world import WorldConfig, write_world
    from .io import check_output_path

    world = build_config(WorldConfig, None, None, **settings)
    check_output_path(str(output_dir))
    return write_world(str(output_dir), world.seed, world.authors, world.questions_per_author)


def train_judge(*, tofu: Optional[str] = None, force: bool = False, threads: int = 2, **settings: Any) -> Result:
    """Train (once, cached) the offline NLI judge (``unlearnlm train-judge``); the numbers are its
    metrics. ``tofu``: a TOFU folder, hub name or retain_perturbed file for the held-out check."""
    from .data.records import load_split
    from .judges.offline import JudgeTrainingConfig, format_metrics, judge_folder, train_offline_nli_judge

    config = build_config(JudgeTrainingConfig, None, None, **settings)  # a bad setting fails before any work
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    tofu_rows = None
    if tofu:
        required = ("question", "answer", "paraphrased_answer", "perturbed_answer")
        is_file = tofu.endswith((".json", ".jsonl"))
        tofu_rows = load_split(tofu if is_file else "retain_perturbed", None if is_file else tofu, required=required)
    _, metrics = train_offline_nli_judge(config, tofu_rows=tofu_rows, force=force, threads=threads)
    return Result(judge_folder(config), metrics, format_metrics(metrics))


def list_methods() -> dict[str, Any]:
    """The unlearning methods (``unlearnlm methods``; ``unlearnlm.methods`` is the package): forget
    losses, regularisers, methods, aliases, and each objective's settings with their defaults."""
    import dataclasses

    from .methods.registry import ALIASES, FORGET_LOSSES, REGULARIZERS, UNMAPPED_NAMES, method_names

    settings = {}
    for name, objective in {**FORGET_LOSSES, **REGULARIZERS}.items():
        defaults = objective.settings()
        settings[name] = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}
    return {"forget_losses": list(FORGET_LOSSES), "regularizers": list(REGULARIZERS), "methods": method_names(),
            "aliases": {**ALIASES, **UNMAPPED_NAMES}, "settings": settings}


def list_presets() -> dict[str, str]:
    """The config presets shipped with unlearnlm (``unlearnlm presets``): name -> its first comment line."""
    from .config import PRESET_DIR, preset_names

    notes = {}
    for name in preset_names():
        first = (PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[:1]
        notes[name] = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
    return notes


def sweep(config=None, *, preset: Optional[str] = None, **overrides: Any) -> Result:
    """A hyper-parameter study (``unlearnlm sweep``, docs/sweep.md): ``config`` a
    ``unlearnlm.scenarios.sweep.SweepConfig``; overrides as ``unlearn.model.name_or_path``,
    ``methods``, ``trials``, ``space.training.lr="1e-6:1e-4:log"``. ``numbers``: result/choice.json
    (``{"finished": False}`` while other workers still run trials)."""
    from .scenarios.sweep import SweepConfig, run_sweep

    built = build_config(SweepConfig, preset, config, **overrides)
    return Result(Path(built.output_dir), run_sweep(built))
