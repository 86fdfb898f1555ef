"""unlearnlm: machine unlearning for causal language models.

The Python API (see ``unlearnlm.api``): ``unlearnlm.finetune``, ``unlearnlm.unlearn`` and
``unlearnlm.evaluate``. They are imported on first use, so ``import unlearnlm`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["finetune", "unlearn", "evaluate", "sweep", "Result"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'unlearnlm' has no attribute {name!r}")
