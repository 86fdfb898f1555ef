from .losses import LossContext, Reference
from .registry import FORGET_LOSSES, REGULARIZERS, Method, Objective, get_method, method_names

__all__ = [
    "FORGET_LOSSES",
    "REGULARIZERS",
    "LossContext",
    "Method",
    "Objective",
    "Reference",
    "get_method",
    "method_names",
]
