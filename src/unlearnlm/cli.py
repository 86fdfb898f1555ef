"""The ``unlearnlm`` command line.

Every command takes an optional ``--config`` (a preset name shipped with unlearnlm, or a YAML
file) and ``key=value`` overrides. A user mistake prints one line, ``unlearnlm: error: …``, and
exits with status 2; only a bug in unlearnlm shows a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional

from .errors import UserError


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="preset name or YAML file (see `unlearnlm presets`)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. training.lr=5e-6")


def cmd_unlearn(args: argparse.Namespace) -> None:
    from .config import UnlearnConfig, load_config

    config = load_config(UnlearnConfig, args.config, args.overrides)
    from .training.run import unlearn

    folder = unlearn(config)
    print(f"unlearned model written to {folder}/model")


def cmd_finetune(args: argparse.Namespace) -> None:
    from .config import FinetuneConfig, load_config

    config = load_config(FinetuneConfig, args.config, args.overrides)
    from .training.run import finetune

    folder = finetune(config)
    print(f"fine-tuned model written to {folder}/model")


def cmd_methods(args: argparse.Namespace) -> None:
    from .methods.registry import FORGET_LOSSES, REGULARIZERS, method_names

    print("forget losses: " + ", ".join(FORGET_LOSSES))
    print("regularisers:  " + ", ".join(REGULARIZERS))
    print("methods:       " + ", ".join(method_names()))


def cmd_presets(args: argparse.Namespace) -> None:
    from .config import PRESET_DIR, preset_names

    for name in preset_names():
        first = (PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[:1]
        note = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"{name:28s} {note}")


# name -> (handler, help, whether it takes --config and overrides)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], str, bool]] = {
    "finetune": (cmd_finetune, "supervised fine-tuning on QA records (a target or a retain model)", True),
    "unlearn": (cmd_unlearn, "unlearn a forget set from a model", True),
    "methods": (cmd_methods, "list the unlearning methods", False),
    "presets": (cmd_presets, "list the config presets shipped with unlearnlm", False),
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
EXTRA_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}


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
