"""unlearnlm: machine unlearning for causal language models.

The Python API (see ``unlearnlm.api``): one function per command, ``unlearnlm.finetune``,
``unlearnlm.unlearn``, ``unlearnlm.evaluate``, ``unlearnlm.attack``, ... ``unlearnlm.demo``. They
are imported on first use, so ``import unlearnlm`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["finetune", "unlearn", "evaluate", "sweep", "attack", "report", "intervals", "scenario", "continual",
           "real_world", "muse", "wmdp", "build_forget_set", "demo", "show_format", "make_world", "train_judge",
           "list_methods", "list_presets", "Result"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'unlearnlm' has no attribute {name!r}")
