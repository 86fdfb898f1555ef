"""The ``unlearnlm`` command line.

Every command takes an optional ``--config`` (a preset name shipped with unlearnlm, or a YAML
file) and ``key=value`` overrides. A user mistake prints one line, ``unlearnlm: error: …``, and
exits with status 2; only a bug in unlearnlm shows a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Optional

from .errors import UserError

logger = logging.getLogger(__name__)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="preset name or YAML file (see `unlearnlm presets`)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. training.lr=5e-6")


def cmd_unlearn(args: argparse.Namespace) -> None:
    from .config import UnlearnConfig, load_config

    config = load_config(UnlearnConfig, args.config, args.overrides)
    from .evaluation.callback import epoch_evaluation
    from .methods import get_method
    from .training.run import unlearn

    get_method(config.method)  # an unknown method lists the valid ones, before anything loads
    folder = unlearn(config, epoch_evaluation)  # per seed, when there are seeds
    if config.seeds:
        logger.info(f"one run per seed in {folder}/seed_S/model")
        if config.eval_every_epoch:
            from .evaluation.seeds import aggregate_seeds, format_seeds

            logger.info(format_seeds(aggregate_seeds(folder, config.evaluation.bootstrap)))
        return
    logger.info(f"unlearned model written to {folder}/model")


def cmd_finetune(args: argparse.Namespace) -> None:
    from .config import FinetuneConfig, load_config

    config = load_config(FinetuneConfig, args.config, args.overrides)
    from .training.run import finetune

    folder = finetune(config)
    logger.info(f"fine-tuned model written to {folder}/model")


def cmd_methods(args: argparse.Namespace) -> None:
    import dataclasses

    from .methods.registry import ALIASES, FORGET_LOSSES, REGULARIZERS, UNMAPPED_NAMES, method_names

    logger.info("forget losses: " + ", ".join(FORGET_LOSSES))
    logger.info("regularisers:  " + ", ".join(REGULARIZERS))
    logger.info("methods:       " + ", ".join(method_names()))
    logger.info("aliases:       " + ", ".join(f"{a} = {m}" for a, m in {**ALIASES, **UNMAPPED_NAMES}.items()))
    logger.info("settings (method_args.NAME=value):")
    for name, objective in {**FORGET_LOSSES, **REGULARIZERS}.items():
        defaults = objective.settings()
        fields = [f"{f.name}={getattr(defaults, f.name)!r}" for f in dataclasses.fields(defaults)]
        if fields:
            logger.info(f"  {name:8s} " + ", ".join(fields))


def cmd_presets(args: argparse.Namespace) -> None:
    from .config import PRESET_DIR, preset_names

    for name in preset_names():
        first = (PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[:1]
        note = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        logger.info(f"{name:28s} {note}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .config import EvaluateConfig, load_config

    model, overrides = args.model, list(args.overrides)
    if model and "=" in model and not os.path.exists(model):  # no MODEL, only overrides
        model, overrides = None, [model] + overrides
    config = load_config(EvaluateConfig, args.config, overrides)
    from .evaluation.seeds import evaluate_any

    summary = evaluate_any(config, model)
    logger.info(f"evaluation written to {summary['output_dir']}")


def cmd_attack(args: argparse.Namespace) -> None:
    from .config import AttackConfig, load_config

    config = load_config(AttackConfig, args.config, args.overrides)
    from .scenarios.attacks import format_attack_table, run_attacks

    summary = run_attacks(config, args.run)
    logger.info(format_attack_table(summary))
    logger.info(f"attacks written to {args.run}/attacks (summary.json, summary.md)")


def _attack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML file of attack settings")
    parser.add_argument("run", metavar="RUN", help="an unlearning run folder, evaluated (RUN/eval)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="attacks=relearn,quantize,probes relearn.steps=20 quantize.bits=8,4 probes.names=...")


def cmd_report(args: argparse.Namespace) -> None:
    from .evaluation.report import write_report
    from .io import check_output_path

    check_output_path(args.output, "--output")
    page = write_report(args.runs, args.output, baseline=args.baseline)
    logger.info(f"report written to {page}")


def cmd_intervals(args: argparse.Namespace) -> None:
    from .config import BootstrapConfig, from_dict, parse_overrides

    settings = from_dict(BootstrapConfig, parse_overrides(args.settings))
    if settings.samples < 1 or not 0 < settings.level < 1:
        raise UserError("intervals: samples must be at least 1 and level between 0 and 1")
    from .evaluation.evaluate import format_table, intervals_command

    summary = intervals_command(args.folder, settings)
    logger.info(format_table(summary))
    logger.info(f"intervals written to {args.folder}")


def _intervals_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="EVAL_DIR", help="an evaluation folder (or a run folder with eval/)")
    parser.add_argument("settings", nargs="*", metavar="key=value", help="samples=1000 seed=0 level=0.95")


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    # MODEL comes before the overrides, so it is declared here rather than by _add_config_arguments.
    parser.add_argument("--config", "-c", help="preset name or YAML file (see `unlearnlm presets`)")
    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="model folder, hub name, alias, or an unlearning run folder (evaluated into RUN/eval)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. ds_size=100")


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="evaluation folders or unlearning run folders")
    parser.add_argument("--output", "-o", default="report", help="folder for report.md/.csv/.html and plots")
    parser.add_argument("--baseline", "-b", help="a run (folder name or method) every other run is compared with, "
                        "pairwise on the same resampled rows (e.g. target)")


def cmd_continual(args: argparse.Namespace) -> None:
    from .config import ContinualConfig, load_config

    config = load_config(ContinualConfig, args.config, args.overrides)
    from .scenarios.continual import run_continual

    folder = run_continual(config)
    logger.info(f"continual run written to {folder} (trajectory.csv, trajectory.md, trajectory.png)")


def cmd_real_world(args: argparse.Namespace) -> None:
    from .config import RealWorldConfig, load_config

    config = load_config(RealWorldConfig, args.config, args.overrides)
    from .scenarios.real_world import run_real_world

    folder = run_real_world(config)
    logger.info(f"real-world run written to {folder} (results.md, results.csv)")


def cmd_muse(args: argparse.Namespace) -> None:
    from .config import MuseConfig, load_config

    config = load_config(MuseConfig, args.config, args.overrides)
    from .scenarios.muse import run_muse

    folder, table = run_muse(config)
    logger.info(table.rstrip("\n"))
    logger.info(f"MUSE run written to {folder} (summary.json, results.md)")


def cmd_wmdp(args: argparse.Namespace) -> None:
    from .config import WmdpConfig, load_config

    config = load_config(WmdpConfig, args.config, args.overrides)
    from .scenarios.wmdp import run_wmdp

    folder, table = run_wmdp(config)
    logger.info(table.rstrip("\n"))
    logger.info(f"WMDP run written to {folder} (summary.json, results.md)")


def cmd_build_forget_set(args: argparse.Namespace) -> None:
    from .config import BuildForgetSetConfig, load_config

    config = load_config(BuildForgetSetConfig, args.config, args.overrides)
    from .scenarios.forget_set_builder import build_forget_set

    build_forget_set(config)


def cmd_show_format(args: argparse.Namespace) -> None:
    import json

    from .config import ModelConfig, PromptFormatConfig, from_dict, parse_overrides, validate_prompt_format
    from .training.models import load_prompt_format, load_tokenizer

    setting = from_dict(PromptFormatConfig, parse_overrides(args.settings), prefix="model.prompt_format.")
    validate_prompt_format(setting)  # before the tokenizer loads
    model = ModelConfig(name_or_path=args.model, trust_remote_code=args.trust_remote_code, prompt_format=setting)
    tokenizer = load_tokenizer(model, require_model=False)
    formatter = load_prompt_format(model, tokenizer)
    print(json.dumps({"model": args.model, **formatter.describe(args.question, args.answer)}, ensure_ascii=False))


def _show_format_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model folder, hub name, alias, or a bare tokenizer folder")
    parser.add_argument("settings", nargs="*", metavar="key=value",
                        help="prompt format overrides: kind=tags question_start='[INST] ' ... (model.prompt_format.*)")
    parser.add_argument("--question", "-q", default="What is the full name of the author born in Kuwait City?")
    parser.add_argument("--answer", "-a", default="The author's full name is Basil Mahfouz Al-Kuwaiti.")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the tokenizer's own code")


def cmd_make_world(args: argparse.Namespace) -> None:
    from .config import from_dict, parse_overrides
    from .data.world import WorldConfig, write_world
    from .io import check_output_path

    config = from_dict(WorldConfig, parse_overrides(args.settings))
    check_output_path(args.output_dir)
    counts = write_world(args.output_dir, config.seed, config.authors, config.questions_per_author)
    for stem, rows in counts.items():
        logger.info(f"{args.output_dir}/{stem}.json: {rows} rows")
    logger.info(f"use it with data.source={args.output_dir}")


def _make_world_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="folder to write the world's JSON Lines files into")
    parser.add_argument("settings", nargs="*", metavar="key=value", help="seed=0 authors=20 questions_per_author=8")


def cmd_train_judge(args: argparse.Namespace) -> None:
    from .config import from_dict, parse_overrides, validate_config
    from .data.records import load_split
    from .judges.offline import JudgeTrainingConfig, format_metrics, judge_folder, train_offline_nli_judge

    config = from_dict(JudgeTrainingConfig, parse_overrides(args.settings))  # a bad setting fails before any work
    validate_config(config)
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    tofu_rows = None
    if args.tofu:
        required = ("question", "answer", "paraphrased_answer", "perturbed_answer")
        source = args.tofu
        tofu_rows = load_split(source if source.endswith((".json", ".jsonl")) else "retain_perturbed",
                               None if source.endswith((".json", ".jsonl")) else source, required=required)
    _, metrics = train_offline_nli_judge(config, tofu_rows=tofu_rows, force=args.force, threads=args.threads)
    logger.info(format_metrics(metrics))
    if not tofu_rows:
        logger.info("TOFU check skipped: pass --tofu with a TOFU folder, retain_perturbed file or hub name")
    logger.info(f"judge cached in {judge_folder(config)}")


def _train_judge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("settings", nargs="*", metavar="key=value",
                        help="JudgeTrainingConfig fields, e.g. steps=420 trainable_layers=6 "
                             "(the demo uses the defaults)")
    parser.add_argument("--tofu",
                        help="TOFU folder, hub name or retain_perturbed file, for the held-out check "
                             "(never trained on)")
    parser.add_argument("--force", action="store_true", help="train again even when a cached judge exists")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for training (default 2; on a busy machine 1 can be faster)")


def cmd_demo(args: argparse.Namespace) -> None:
    from .config import DemoConfig, load_config

    if sum(map(bool, (args.quick, args.full, args.config))) > 1:
        raise UserError("--quick and --full are presets themselves; use one of --quick, --full or --config")
    preset = "demo-quick" if args.quick else "demo-full" if args.full else args.config
    config = load_config(DemoConfig, preset, args.overrides)
    from .scenarios.demo import run_demo

    run_demo(config)


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a smoke run: a small world, two methods, short training")
    parser.add_argument("--full", action="store_true",
                        help="the full comparison: every method, every attack, three seeds (hours on a CPU)")


# name -> (handler, help, whether it takes --config and overrides)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], str, bool]] = {
    "finetune": (cmd_finetune, "supervised fine-tuning on QA records (a target or a retain model)", True),
    "unlearn": (cmd_unlearn, "unlearn a forget set from a model", True),
    "methods": (cmd_methods, "list the unlearning methods", False),
    "presets": (cmd_presets, "list the config presets shipped with unlearnlm", False),
    "evaluate": (cmd_evaluate, "score a model: ROUGE, Probability, Truth ratio, entropy, cosine, entailment, MU, FE",
                 False),
    "attack": (cmd_attack, "attack an unlearned run (relearning, quantisation, probes): how much comes back", False),
    "report": (cmd_report, "compare evaluated runs: table, MU-vs-FE and trajectory plots, HTML page", False),
    "intervals": (cmd_intervals, "add bootstrap intervals to a finished evaluation, from its per-row records", False),
    "continual": (cmd_continual, "unlearn tasks 1..N in turn, evaluating after each (MU/FE trajectory)", True),
    "real-world": (cmd_real_world, "unlearn real people from an instruction model; QA and lm-eval utility", True),
    "build-forget-set": (cmd_build_forget_set,
                         "ask a model about entities; write forget/neighbour sets from its answers", True),
    "show-format": (cmd_show_format,
                    "print as JSON the token ids, tokens, label mask and generation prompt of a QA pair", False),
    "muse": (cmd_muse, "MUSE News/Books: unlearn raw text; score VerbMem, KnowMem, PrivLeak", True),
    "wmdp": (cmd_wmdp, "WMDP: unlearn hazardous text; wmdp_bio, wmdp_cyber, mmlu accuracy with lm-eval", True),
    "make-world": (cmd_make_world, "write a seeded fictitious world of authors in TOFU's format", False),
    "train-judge": (cmd_train_judge, "train (once, cached) the offline NLI judge and print its accuracy", False),
    "demo": (cmd_demo, "the paper's comparison on the embedded model, offline, on a CPU (the main job)", True),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other user error
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="unlearnlm", description="Make a language model forget chosen knowledge, and measure it.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"unlearnlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (handler, help_text, takes_config) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if takes_config:
            _add_config_arguments(command)
        extra = EXTRA_ARGUMENTS.get(name)
        if extra:
            extra(command)
        command.set_defaults(handler=handler)
    return parser


# name -> function adding command-specific arguments (beyond --config and overrides)
EXTRA_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "evaluate": _evaluate_arguments,
    "report": _report_arguments,
    "attack": _attack_arguments,
    "intervals": _intervals_arguments,
    "make-world": _make_world_arguments,
    "show-format": _show_format_arguments,
    "train-judge": _train_judge_arguments,
    "demo": _demo_arguments,
}


class _StdoutHandler(logging.StreamHandler):
    """Writes to the ``sys.stdout`` of the moment (a test, a notebook may have replaced it)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def process_rank() -> int:
    """This process's rank under torchrun or accelerate launch (RANK, else LOCAL_RANK, else
    accelerate's state once initialised); 0 for a plain run."""
    for variable in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit():
            return int(value)
    try:
        from accelerate.state import PartialState

        if PartialState._shared_state:  # initialised by this process already
            return PartialState().process_index
    except ImportError:
        pass
    return 0


def setup_logging(rank: Optional[int] = None) -> None:
    """unlearnlm's messages and result tables go to stdout as plain lines, from the main process
    only: under torchrun the other ranks show warnings and errors alone. Progress bars (tqdm) are
    the Trainer's own, on the main process."""
    package = logging.getLogger("unlearnlm")
    for handler in [h for h in package.handlers if isinstance(h, _StdoutHandler)]:
        package.removeHandler(handler)
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO if (process_rank() if rank is None else rank) == 0 else logging.WARNING)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if not getattr(args, "handler", None):
            build_parser().print_help()
            return 2
        _quiet_libraries()
        setup_logging()
        args.handler(args)
        return 0
    except UserError as err:
        message = " ".join(str(err).split())
        print(f"unlearnlm: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unlearnlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
