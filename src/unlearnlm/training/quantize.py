"""Quantisation attacks: does the forgetting survive rounding the weights?

``fake_quantize_model`` rounds every linear layer's weight (not the embeddings, not the output
head) to ``bits``-bit integers, round-to-nearest with a symmetric absmax scale per group of
``group_size`` input columns, and writes the dequantised values back. The arithmetic is done in
float32 on the CPU from the weights as loaded (IEEE division and round-half-to-even: no
device-specific kernel), so it gives the same numbers whatever device the model runs on
afterwards. ``load_bitsandbytes`` loads a model through bitsandbytes' own 8-bit or nf4 kernels
instead (a GPU and the package needed).
"""

from __future__ import annotations

import torch

from ..config import BNB_MODES


def fake_quantize_weight(weight: torch.Tensor, bits: int, group_size: int = 128) -> torch.Tensor:
    """Dequantised RTN weight: per row, each group of ``group_size`` columns (the last may be
    shorter) gets scale = absmax / (2^(bits-1) - 1); values become round(w / scale) * scale."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    if bits < 2:
        raise ValueError(f"bits must be at least 2, got {bits}")
    rows, columns = weight.shape
    levels = 2 ** (bits - 1) - 1
    values = weight.detach().to("cpu", torch.float32)
    pad = (-columns) % group_size
    grouped = torch.nn.functional.pad(values, (0, pad)).view(rows, -1, group_size)
    scale = grouped.abs().amax(dim=-1, keepdim=True) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
    quantised = torch.clamp(torch.round(grouped / scale), -levels, levels)
    return (quantised * scale).view(rows, -1)[:, :columns].to(weight.dtype)


def quantizable_linears(model) -> list[tuple[str, torch.nn.Linear]]:
    """Every nn.Linear but the output head (also when it shares the embedding's weight)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_weight = getattr(head, "weight", None)
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head and module.weight is not head_weight]


@torch.no_grad()
def fake_quantize_model(model, bits: int, group_size: int = 128) -> list[str]:
    """Quantise ``model``'s linear layers in place; returns the names of the layers changed."""
    names = []
    for name, module in quantizable_linears(model):
        module.weight.copy_(fake_quantize_weight(module.weight, bits, group_size).to(module.weight.device))
        names.append(name)
    return names


def bitsandbytes_unavailable() -> str | None:
    """Why bitsandbytes loading cannot run here (None when it can)."""
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "the bitsandbytes package is not installed"
    return None


def load_bitsandbytes(model_config, mode: str):
    """The model loaded through bitsandbytes: 8-bit (LLM.int8) or 4-bit nf4, on the GPU."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from .models import resolve_model_path

    if mode == "int8":
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    elif mode == "nf4":
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_compute_dtype=torch.bfloat16)
    else:
        raise ValueError(f"unknown bitsandbytes mode {mode!r}; valid: {', '.join(BNB_MODES)}")
    return AutoModelForCausalLM.from_pretrained(
        resolve_model_path(model_config.name_or_path), quantization_config=quantization, device_map={"": 0},
        trust_remote_code=model_config.trust_remote_code,
    )
