"""Bootstrap intervals and paired comparisons from an evaluation's per-row records.

No model is in the loop: the per-row values (ROUGE recall, probability, R, entropy, cosine,
entailed) are already in ``records/SET.jsonl``, so a bootstrap replicate only re-aggregates.

- Every set's rows are resampled with replacement, ``samples`` times (B = 1,000 by default),
  each set independently; a replicate's set metrics and aggregates (MU, FE, TOFU MU, ...) are
  recomputed through the evaluation's own two scoring functions (``Scoring``), so an interval
  is always the interval of exactly the number printed. Percentile intervals at the level set
  (bootstrap.level, 95% by default).
- The resampled row indices depend only on (seed, set name, number of rows): two models
  evaluated on the same rows get the same replicates, so the difference of their replicates is
  the paired bootstrap of their difference. "Distinguishable": its interval excludes 0.
- Several seeds of one method: each replicate averages the seeds' values on the same resampled
  questions (the questions are shared by the seeds; only training differs).
- Forget Quality is a KS-test p-value already; it gets no interval (the summary names its rows).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..config import BootstrapConfig
from ..errors import UserError

# The bootstrap's defaults are the settings' own (declared once, in config.BootstrapConfig).
DEFAULT_SAMPLES = BootstrapConfig.samples
DEFAULT_LEVEL = BootstrapConfig.level


def percent(level: float) -> str:
    """A confidence level as a label: 0.95 -> "95%", 0.975 -> "97.5%"."""
    return f"{100 * level:g}%"


def levels_label(levels: Iterable[float | None]) -> str:
    """The label of the levels some results were computed at ("95%", or "90%/95%" when they
    differ); "" when none is known. Every label of an interval is made by this or ``percent``."""
    known = sorted({float(level) for level in levels if level is not None})
    return "/".join(percent(level) for level in known)


def interval_level(summary: dict) -> float | None:
    """The level of a summary's intervals (its ``intervals`` block), None without intervals."""
    return (summary.get("intervals") or {}).get("level")


# A set of one row resamples to itself: its metrics get no interval (a zero width is no certainty).
MIN_INTERVAL_ROWS = 2

# (a set's rows, whether it is a forget set) -> {metric: value or None}
SetMetricsFunction = Callable[[Sequence[dict], bool], dict]
# {set name: {"role", "rows", "metrics"}} -> {aggregate: value or None}
AggregatesFunction = Callable[[dict], dict]


@dataclass(frozen=True)
class Scoring:
    """The evaluation's scoring, as two functions: one set's metrics from its rows, and the
    aggregates from every set's metrics. The bootstrap calls exactly these (the seam where a
    metric registry plugs in)."""

    set_metrics: SetMetricsFunction
    aggregates: AggregatesFunction
    # Numbers that need the rows themselves, not only the set results (the MIA AUCs of forget
    # against holdout rows): a function of every (resampled) set.
    row_aggregates: Optional[Callable[[Sequence[SetRows]], dict]] = None


@dataclass
class SetRows:
    """One evaluation set's per-row records."""

    name: str
    role: str
    rows: list[dict]

    @property
    def forget_form(self) -> bool:
        return self.role == "forget"


@dataclass
class Replicates:
    """One model's point values and their ``samples`` bootstrap replicates (NaN = unavailable).

    Keys are flat: ``MU``, ``FE``, ..., ``SET/METRIC`` (as the CSV columns)."""

    point: dict[str, float | None]
    values: dict[str, np.ndarray]
    samples: int
    seed: int
    rows: dict[str, int] = field(default_factory=dict)


def index_matrix(seed: int, set_name: str, n_rows: int, samples: int) -> np.ndarray:
    """(samples, n_rows) row indices drawn with replacement; the same for the same arguments."""
    rng = np.random.default_rng([int(seed), zlib.crc32(set_name.encode("utf-8")), int(n_rows)])
    return rng.integers(0, n_rows, size=(samples, n_rows))


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _score(sets: Sequence[SetRows], resampled: Sequence[Sequence[dict]], scoring: Scoring) -> dict[str, float | None]:
    results = {}
    flat: dict[str, float | None] = {}
    for eval_set, rows in zip(sets, resampled, strict=True):
        metrics = scoring.set_metrics(rows, eval_set.forget_form)
        results[eval_set.name] = {"role": eval_set.role, "rows": len(rows), "metrics": metrics}
        flat.update({f"{eval_set.name}/{m}": v for m, v in metrics.items()})
    if scoring.row_aggregates is not None:
        flat.update(scoring.row_aggregates([SetRows(s.name, s.role, list(rows)) for s, rows in zip(sets, resampled)]))
    return {**scoring.aggregates(results), **flat}


def bootstrap(sets: Sequence[SetRows], scoring: Scoring, samples: int = DEFAULT_SAMPLES, seed: int = 0) -> Replicates:
    """Point values and ``samples`` replicates of every set metric and aggregate."""
    if samples < 1:
        raise UserError(f"bootstrap samples must be at least 1, got {samples}")
    point = _score(sets, [s.rows for s in sets], scoring)
    matrices = [index_matrix(seed, s.name, len(s.rows), samples) if s.rows else None for s in sets]
    values = {key: np.empty(samples) for key in point}
    for b in range(samples):
        resampled = [[s.rows[i] for i in m[b]] if m is not None else [] for s, m in zip(sets, matrices, strict=True)]
        for key, value in _score(sets, resampled, scoring).items():
            if key in values:
                values[key][b] = _number(value)
    return Replicates(point, values, samples, seed, {s.name: len(s.rows) for s in sets})


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
    """The central ``level`` percentile interval; None when any replicate is unavailable."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return None
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def intervals(replicates: Replicates, level: float = DEFAULT_LEVEL) -> dict[str, list[float] | None]:
    """{key: [low, high]} (None where the point value is unavailable)."""
    result = {}
    for key, values in replicates.values.items():
        interval = percentile_interval(values, level) if replicates.point.get(key) is not None else None
        result[key] = None if interval is None else [interval[0], interval[1]]
    return result


def interval_summary(replicates: Replicates, level: float = DEFAULT_LEVEL, fq_rows: int | None = None) -> dict:
    """The ``intervals`` block of summary.json."""
    values = intervals(replicates, level)
    undefined = {}
    for name, count in replicates.rows.items():
        if count < MIN_INTERVAL_ROWS:
            undefined[name] = (f"{count} row{'s' if count != 1 else ''}: an interval needs at least "
                               f"{MIN_INTERVAL_ROWS} rows to resample")
            values.update({key: None for key in values if key.startswith(f"{name}/")})
    block = {
        "method": "percentile bootstrap over each set's rows, sets resampled independently",
        "samples": replicates.samples,
        "seed": replicates.seed,
        "level": level,
        "rows": replicates.rows,
        "values": values,
    }
    if undefined:
        block["undefined"] = undefined
    if fq_rows is not None:
        block["FQ"] = f"no interval (a KS-test p-value), on {fq_rows} forget rows"
    return block


# ---- paired comparisons --------------------------------------------------------------------------


def align_rows(sets: Sequence[SetRows], baseline: Sequence[SetRows], what: str = "the baseline") -> list[SetRows]:
    """``sets`` reordered to the baseline's rows, matched by set and question; a mismatch is a UserError."""
    by_name = {s.name: s for s in sets}
    aligned = []
    for base in baseline:
        mine = by_name.get(base.name)
        if mine is None:
            raise UserError(f"paired comparison: {what} has a set '{base.name}' the other model lacks")
        questions = [r.get("question") for r in mine.rows]
        base_questions = [r.get("question") for r in base.rows]
        if questions == base_questions:
            aligned.append(mine)
            continue
        if len(set(questions)) != len(questions) or set(questions) != set(base_questions):
            raise UserError(f"paired comparison: set '{base.name}' holds other rows than {what}'s "
                            f"({len(questions)} vs {len(base_questions)} rows); evaluate both on the same data")
        position = {q: i for i, q in enumerate(questions)}
        aligned.append(SetRows(mine.name, mine.role, [mine.rows[position[q]] for q in base_questions]))
    if set(by_name) - {s.name for s in baseline}:
        extra = sorted(set(by_name) - {s.name for s in baseline})[0]
        raise UserError(f"paired comparison: set '{extra}' is missing from {what}")
    return aligned


def paired_difference(model: Replicates, baseline: Replicates, level: float = DEFAULT_LEVEL) -> dict[str, dict]:
    """{key: {difference, interval, distinguishable}}: model minus baseline, replicate by replicate.

    Both must come from the same rows, seed and number of samples (the same resampled rows)."""
    if (model.samples, model.seed, model.rows) != (baseline.samples, baseline.seed, baseline.rows):
        raise UserError("paired comparison: the two bootstraps resampled different rows "
                        "(samples, seed or set sizes differ)")
    result = {}
    for key, values in model.values.items():
        a, b = model.point.get(key), baseline.point.get(key)
        if a is None or b is None or key not in baseline.values:
            continue
        interval = percentile_interval(values - baseline.values[key], level)
        result[key] = {
            "difference": float(a) - float(b),
            "interval": None if interval is None else [interval[0], interval[1]],
            "distinguishable": interval is not None and (interval[0] > 0 or interval[1] < 0),
        }
    return result


# ---- several seeds ---------------------------------------------------------------------------------


def pooled_over_seeds(per_seed: Sequence[Replicates]) -> Replicates:
    """The seeds' mean, and its replicates: each the seeds' mean on the same resampled questions."""
    if not per_seed:
        raise ValueError("pooled_over_seeds: no seeds")
    first = per_seed[0]
    point, values = {}, {}
    for key in first.values:
        points = [r.point.get(key) for r in per_seed]
        point[key] = None if any(p is None for p in points) else float(np.mean(points))
        values[key] = np.mean([r.values[key] for r in per_seed], axis=0)
    return Replicates(point, values, first.samples, first.seed, dict(first.rows))


def seed_spread(points: Sequence[dict]) -> dict[str, dict]:
    """{key: {mean, sd, n}} over the seeds' point values (sd with n - 1; 0 for one seed)."""
    keys = [k for k in points[0] if all(isinstance(p.get(k), (int, float)) for p in points)] if points else []
    result = {}
    for key in keys:
        values = np.asarray([float(p[key]) for p in points])
        result[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                       "n": len(values)}
    return result


# ---- printing ----------------------------------------------------------------------------------------


def interval_decimals(interval: Sequence[float], least: int = 2, most: int = 4) -> int:
    """Enough decimals that an interval's two ends differ when they do (2 for a width of 0.05)."""
    width = abs(float(interval[1]) - float(interval[0]))
    if width <= 0 or not math.isfinite(width):
        return least
    return max(least, min(most, math.ceil(-math.log10(width))))


def format_interval(interval: Sequence[float], signed: bool = False) -> str:
    """``[0.39, 0.45]`` (``[+0.01, +0.05]`` signed), with as many decimals as the width needs."""
    places = interval_decimals(interval)
    sign = "+" if signed else ""
    return f"[{interval[0]:{sign}.{places}f}, {interval[1]:{sign}.{places}f}]"


def short_interval(interval: Optional[Sequence[float]]) -> str:
    """``[.39,.45]``: an interval in a 9-character table cell (a leading 0 dropped; 10.07 stays)."""
    if not interval:
        return ""

    def short(x: float) -> str:
        text = f"{round(x, 2) + 0.0:.2f}"  # + 0.0: no "-0.00"
        return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text

    return "[" + ",".join(short(float(x)) for x in interval) + "]"


def format_with_interval(value: float | None, interval: Sequence[float] | None, digits: int = 4) -> str:
    """``0.4197 [0.39, 0.45]``; the value alone without an interval, ``-`` without a value."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    if interval:
        text += " " + format_interval(interval)
    return text
