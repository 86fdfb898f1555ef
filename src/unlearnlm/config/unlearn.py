"""The unlearn command's config: the run's method and its coefficients, the sections it embeds
(model, data, training, lora, evaluation), and the typing of a method's own settings."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import UserError
from .checks import _finite, _overwritten, _require
from .convert import from_dict, to_dict
from .evaluation import EvaluateConfig
from .model import DataConfig, LoraConfig, ModelConfig
from .training import TrainingConfig


@dataclass
class UnlearnConfig:
    method: str = "ME+GD"
    # Empty means the method's default (docs/formulas.md#objectives: 0.1 for ME+GD, else 1.0).
    forget_coeff: Optional[float] = None
    # Empty means the method's default (1.0; SatImp's 0.1, its authors').
    regularization_coeff: Optional[float] = None
    beta: float = 0.1
    # Empty means the method's default (false for ME+GD, true otherwise).
    mask: Optional[bool] = None
    # Reference model for NPO/DPO/KL: the model at the start of this run, or a fixed path.
    reference_model: Optional[str] = None
    # The method's own hyper-parameters (method_args.beta=4.5 for SimNPO; `unlearnlm methods`
    # lists each method's); a run writes every one, defaults included, into its config.yaml.
    method_args: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs/unlearn"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Evaluate at the start and at the end of every epoch (OUTPUT_DIR/eval/epoch_K, trajectories in
    # OUTPUT_DIR/eval/results.csv); `evaluation`'s model and output_dir are the run's own.
    eval_every_epoch: bool = False
    evaluation: EvaluateConfig = field(default_factory=EvaluateConfig)
    # One run per seed (training.seed), each in OUTPUT_DIR/seed_S; a seed already run is not redone.
    # Empty = one run, in OUTPUT_DIR itself, with training.seed.
    seeds: Optional[list[int]] = None

    def validate(self):
        """Returns the method, resolved once here, for the caller to pass on."""
        from ..methods.registry import get_method

        self.model.validate()
        self.training.validate()
        self.lora.validate()
        self.data.validate()
        method = get_method(self.method)  # an unknown method lists the valid ones
        method_settings(self, method)
        _require(math.isfinite(self.beta) and self.beta > 0, f"beta must be a positive number, got {self.beta}")
        _require(_finite(self.forget_coeff), f"forget_coeff must be a finite number, got {self.forget_coeff}")
        _require(_finite(self.regularization_coeff),
                 f"regularization_coeff must be a finite number, got {self.regularization_coeff}")
        self.evaluation.validate(prefix="evaluation.", with_model=False)
        # The run's evaluations score the run's own model into the run's folder.
        _overwritten(self.evaluation, EvaluateConfig(), {
            "model.name_or_path": "set model.name_or_path", "model.dtype": "set model.dtype",
            "model.trust_remote_code": "set model.trust_remote_code", "model.prompt_format": "set model.prompt_format",
            "output_dir": "per-epoch evaluations go into OUTPUT_DIR/eval"},
            "the run's evaluations score the run's own model (its model section) into its own folder",
            prefix="evaluation.")
        self._text_fits(method)
        if self.seeds:
            _require(len(set(self.seeds)) == len(self.seeds), f"seeds lists a seed twice: {self.seeds}")
        return method

    def _text_fits(self, method) -> None:
        """Text mode gives forget and retain chunks only: a method reading questions or refusals is
        refused (``method``: self.method resolved)."""
        data = self.data
        if data.format != "text":
            return
        from ..data.batches import TEXT_KINDS

        missing = [kind for kind in method.inputs if kind not in TEXT_KINDS]
        _require(not missing, f"method {method.name} reads {', '.join(missing)} sequences (questions or refusals), "
                              "which plain text has not; on data.format=text use one that reads forget and retain "
                              "text only (e.g. GA, NPO, GA+GD, NPO+KL)")
        _require(not data.task_id,
                 "data.task_id selects QA tasks and text has none: set data.task_id=[] with data.format=text")
        _require(not (method.needs_retain and not data.retain),
                 f"method {method.name} needs a retain text set: set data.retain (e.g. raw/retain1)")
        _require(not self.eval_every_epoch, "eval_every_epoch scores QA sets; it does not run with data.format=text")


def method_settings(config: UnlearnConfig, method=None):
    """``config.method_args`` as the method's typed settings dataclass, defaults filled in;
    a name the method lacks or a bad value is one line naming the method's settings.
    ``method``: config.method resolved already (else resolved here)."""
    from ..methods.registry import get_method

    method = method or get_method(config.method)
    cls = method.settings
    names = [f.name for f in dataclasses.fields(cls)]
    valid = (f"its settings: {', '.join(f'{n} (default {getattr(cls(), n)!r})' for n in names)}"
             if names else "it has no settings")
    unknown = sorted(set(config.method_args) - set(names))
    _require(not unknown, f"method {method.name} has no setting '{unknown[0] if unknown else ''}'; {valid}")
    try:
        settings = from_dict(cls, config.method_args, prefix="method_args.")
    except UserError as err:
        raise UserError(f"{err} (method {method.name}; {valid})") from None
    problems = method.settings_problems(settings)
    _require(not problems, f"method {method.name}: {'; '.join(problems)}; {valid}")
    # The top-level beta is NPO's, DPO's, AP's and AltPO's; a method with a beta of its own would ignore it.
    _require(config.beta == UnlearnConfig.beta or "beta" not in names,
             f"method {method.name} takes its beta as method_args.beta (default {getattr(cls(), 'beta', None)}); "
             "the top-level beta is that of NPO, DPO, AP and AltPO")
    return settings


def with_method_settings(config: UnlearnConfig, method=None) -> UnlearnConfig:
    """The config with every setting of its method written out (what a run saves)."""
    return dataclasses.replace(config, method_args=to_dict(method_settings(config, method)))
