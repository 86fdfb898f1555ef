"""What the evaluation benchmarks share: their model and judge options, the loading of the model
and judges those options name, and the machine and command lines of their reports."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path


def add_model_arguments(parser, fast_help: str, output: Path) -> None:
    """--model, --fast, --embedder, --nli, --threads and --output (default ``output``)."""
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--fast", action="store_true", help=fast_help)
    parser.add_argument("--embedder", default="auto")
    parser.add_argument("--nli", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--output", default=str(output))


def load_model_and_judges(args):
    """(model, tokenizer, judges) as ``args`` name them; --fast replaces args.model by the random
    model of the unlearning benchmark, and --threads sets torch's CPU threads."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from unlearnlm.config import JudgesConfig, ModelConfig
    from unlearnlm.evaluation.evaluate import Judges
    from unlearnlm.training.models import load_for_inference

    transformers.logging.set_verbosity_error()
    if args.fast:
        from bench_unlearning import fast_model  # the same random model as the unlearning benchmark

        args.model = str(fast_model(Path(tempfile.gettempdir()) / "unlearnlm-bench-fast-model"))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_for_inference(ModelConfig(name_or_path=args.model))
    judges = Judges.load(JudgesConfig(embedder=args.embedder, nli=args.nli))
    return model, tokenizer, judges


def command_line() -> str:
    """The command that ran this benchmark, as run from the repository root."""
    return "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def machine() -> dict:
    """The platform, CPUs, torch threads and version, and the load average at the end."""
    import torch

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_avg_end": os.getloadavg()[0]}
