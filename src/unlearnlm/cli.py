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


def _overrides(items: list[str]) -> dict[str, str]:
    from .api import command_line_overrides

    return command_line_overrides(items)


def cmd_unlearn(args: argparse.Namespace) -> None:
    from . import api

    result = api.unlearn(preset=args.config, **_overrides(args.overrides))
    if "seeds" in result.numbers:  # one run per seed
        logger.info(f"one run per seed in {result.folder}/seed_S/model")
        if result.text:
            logger.info(result.text)
        return
    logger.info(f"unlearned model written to {result.folder}/model")


def cmd_finetune(args: argparse.Namespace) -> None:
    from . import api

    result = api.finetune(preset=args.config, **_overrides(args.overrides))
    logger.info(f"fine-tuned model written to {result.folder}/model")


def cmd_methods(args: argparse.Namespace) -> None:
    from . import api

    listing = api.list_methods()
    logger.info("forget losses: " + ", ".join(listing["forget_losses"]))
    logger.info("regularisers:  " + ", ".join(listing["regularizers"]))
    logger.info("methods:       " + ", ".join(listing["methods"]))
    logger.info("aliases:       " + ", ".join(f"{a} = {m}" for a, m in listing["aliases"].items()))
    logger.info("settings (method_args.NAME=value):")
    for name, settings in listing["settings"].items():
        if settings:
            logger.info(f"  {name:8s} " + ", ".join(f"{key}={value!r}" for key, value in settings.items()))


def cmd_presets(args: argparse.Namespace) -> None:
    from . import api

    for name, note in api.list_presets().items():
        logger.info(f"{name:28s} {note}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from . import api

    model, overrides = args.model, list(args.overrides)
    if model and "=" in model and not os.path.exists(model):  # no MODEL, only overrides
        model, overrides = None, [model] + overrides
    result = api.evaluate(model, preset=args.config, **_overrides(overrides))
    logger.info(f"evaluation written to {result.folder}")


def cmd_attack(args: argparse.Namespace) -> None:
    from . import api

    result = api.attack(args.run, preset=args.config, **_overrides(args.overrides))
    logger.info(result.text)
    logger.info(f"attacks written to {args.run}/attacks (summary.json, summary.md)")


def _attack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML file of attack settings")
    parser.add_argument("run", metavar="RUN", help="an unlearning run folder, evaluated (RUN/eval)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="attacks=relearn,quantize,probes relearn.steps=20 quantize.bits=8,4 probes.names=...")


def cmd_report(args: argparse.Namespace) -> None:
    from . import api

    page = api.report(args.runs, args.output, baseline=args.baseline)
    logger.info(f"report written to {page}")


def cmd_intervals(args: argparse.Namespace) -> None:
    from . import api

    result = api.intervals(args.folder, **_overrides(args.settings))
    logger.info(result.text)
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


def cmd_sweep(args: argparse.Namespace) -> None:
    from . import api

    result = api.sweep(preset=args.config, **_overrides(args.overrides))
    logger.info(f"study written to {result.folder} (report: unlearnlm report {result.folder})")


def cmd_scenario(args: argparse.Namespace) -> None:
    """Every scenario of scenarios.registry: its config section from --config and overrides."""
    from . import api
    from .scenarios.registry import get_scenario

    result = api.scenario(args.command, preset=args.config, **_overrides(args.overrides))
    if result.text:
        logger.info(result.text.rstrip("\n"))
    written = get_scenario(args.command).written
    if written:
        logger.info(f"{args.command} run written to {result.folder} ({written})")


def cmd_show_format(args: argparse.Namespace) -> None:
    import json

    from . import api

    shown = api.show_format(args.model, args.question, args.answer, trust_remote_code=args.trust_remote_code,
                            **_overrides(args.settings))
    print(json.dumps(shown, ensure_ascii=False))


def _show_format_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model folder, hub name, alias, or a bare tokenizer folder")
    parser.add_argument("settings", nargs="*", metavar="key=value",
                        help="prompt format overrides: kind=tags question_start='[INST] ' ... (model.prompt_format.*)")
    parser.add_argument("--question", "-q", default="What is the full name of the author born in Kuwait City?")
    parser.add_argument("--answer", "-a", default="The author's full name is Basil Mahfouz Al-Kuwaiti.")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the tokenizer's own code")


def cmd_make_world(args: argparse.Namespace) -> None:
    from . import api

    counts = api.make_world(args.output_dir, **_overrides(args.settings))
    for stem, rows in counts.items():
        logger.info(f"{args.output_dir}/{stem}.json: {rows} rows")
    logger.info(f"use it with data.source={args.output_dir}")


def _make_world_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="folder to write the world's JSON Lines files into")
    parser.add_argument("settings", nargs="*", metavar="key=value", help="seed=0 authors=20 questions_per_author=8")


def cmd_train_judge(args: argparse.Namespace) -> None:
    from . import api

    result = api.train_judge(tofu=args.tofu, force=args.force, threads=args.threads, **_overrides(args.settings))
    logger.info(result.text)
    if "tofu_pairs" not in result.numbers:
        logger.info("TOFU check skipped: pass --tofu with a TOFU folder, retain_perturbed file or hub name")
    logger.info(f"judge cached in {result.folder}")


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
    from . import api

    api.demo(preset=args.config, quick=args.quick, full=args.full, **_overrides(args.overrides))


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a smoke run: a small world, two methods, short training")
    parser.add_argument("--full", action="store_true",
                        help="the full comparison: every method, every attack, three seeds (hours on a CPU)")


# name -> (handler, help, whether it takes --config and overrides). The scenarios (continual,
# real-world, muse, ...) are added from scenarios.registry.SCENARIOS, with cmd_scenario.
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
    "sweep": (cmd_sweep, "choose hyper-parameters on held-apart rows with Optuna; score the choice on the others",
              True),
    "show-format": (cmd_show_format,
                    "print as JSON the token ids, tokens, label mask and generation prompt of a QA pair", False),
    "make-world": (cmd_make_world, "write a seeded fictitious world of authors in TOFU's format", False),
    "train-judge": (cmd_train_judge, "train (once, cached) the offline NLI judge and print its accuracy", False),
}


def all_commands() -> dict[str, tuple[Callable[[argparse.Namespace], None], str, bool]]:
    """COMMANDS and every scenario of the registry (a scenario with a handler of its own: demo)."""
    from .scenarios.registry import SCENARIOS

    scenarios = {name: (SCENARIO_HANDLERS.get(name, cmd_scenario), s.help, True) for name, s in SCENARIOS.items()}
    return {**COMMANDS, **scenarios}


SCENARIO_HANDLERS: dict[str, Callable[[argparse.Namespace], None]] = {"demo": cmd_demo}  # --quick


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other user error
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="unlearnlm", description="Make a language model forget chosen knowledge, and measure it.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"unlearnlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.commands = {}  # name -> its parser
    for name, (handler, help_text, takes_config) in all_commands().items():
        command = parser.commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        if takes_config:
            _add_config_arguments(command)
        extra = EXTRA_ARGUMENTS.get(name)
        if extra:
            extra(command)
        command.set_defaults(handler=handler, command=name)  # set here: the command's parser runs alone
    return parser


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The command line, with ``key=value`` overrides and options in any order
    (``evaluate MODEL --config X ds_size=3``): a command's own arguments are parsed intermixed."""
    parser = build_parser()
    position = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if position is None or argv[position] not in parser.commands or position > 0:
        return parser.parse_args(argv)  # no command, or an option of unlearnlm itself first (--version)
    return parser.commands[argv[position]].parse_intermixed_args(argv[position + 1:])


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
        args = parse_arguments(sys.argv[1:] if argv is None else list(argv))
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
