"""The report's figures, each returned as PNG bytes: MU against FE, every headline number with
its interval, and the per-epoch trajectories."""

from __future__ import annotations

from collections.abc import Sequence

from ...figures import png_bytes
from ...figures import pyplot as _pyplot
from .. import statistics as S
from ..metrics import METRICS
from ..runs import flat_numbers, interval_values
from .load import RunResult
from .tables import TITLES, arrow, better_direction


def _bounds(run: RunResult, key: str) -> tuple[float, float] | None:
    interval = run.intervals.get(key)
    return (float(interval[0]), float(interval[1])) if interval else None


def _fitted_limits(values: Sequence[float], pad: float = 0.08, minimum_span: float = 0.1) -> tuple[float, float]:
    """Limits around ``values`` with a margin, kept inside [-0.02, 1.02] (every number is in [0, 1])."""
    low, high = min(values), max(values)
    span = max(high - low, minimum_span)
    centre = (low + high) / 2
    low, high = centre - span / 2 - pad * span, centre + span / 2 + pad * span
    return max(-0.02, low), min(1.02, high)


def _overlap(a, b) -> float:
    """Overlapping area of two display-space boxes (x0, y0, x1, y1)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def place_labels(axis, points: Sequence[tuple[float, float]], labels: Sequence[str], fontsize: float = 8) -> list:
    """Labels next to their points, never on another label or point: each label, in order, takes
    the first of a fixed list of offsets (nearest first) where its box overlaps no placed label, no
    point and stays inside the axes; when none is free it takes the least-overlapping one, with a
    leader line. Deterministic: the same points give the same layout."""
    figure = axis.figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    inside = axis.get_window_extent(renderer)
    scale = figure.dpi / 72.0
    marker = 5 * scale
    taken = [(x - marker, y - marker, x + marker, y + marker)
             for x, y in (axis.transData.transform(p) for p in points)]
    offsets = []
    for radius in (6, 14, 24, 36, 50):
        for dx, dy in ((1, 0.6), (1, -1), (-1, 0.6), (-1, -1), (0, 1.4), (0, -1.8), (1.4, 0), (-1.4, 0)):
            offsets.append((dx * radius, dy * radius))
    texts = []
    for (x, y), label in zip(points, labels, strict=True):
        text = axis.annotate(label, (x, y), textcoords="offset points", xytext=(0, 0), fontsize=fontsize,
                             ha="left", va="bottom")
        best, best_cost = None, None
        for dx, dy in offsets:
            text.set_position((dx, dy))
            text.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
            text.set_va("bottom" if dy > 0 else "top")
            box = text.get_window_extent(renderer)
            box = (box.x0 - 1, box.y0 - 1, box.x1 + 1, box.y1 + 1)
            outside = (max(0, inside.x0 - box[0]) + max(0, box[2] - inside.x1)
                       + max(0, inside.y0 - box[1]) + max(0, box[3] - inside.y1))
            cost = sum(_overlap(box, other) for other in taken) + 1000 * outside
            if best_cost is None or cost < best_cost - 1e-9:
                best, best_cost = (dx, dy, box), cost
            if cost == 0:
                break
        dx, dy, box = best
        text.set_position((dx, dy))
        text.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
        text.set_va("bottom" if dy > 0 else "top")
        if abs(dx) > 14 or abs(dy) > 14:  # far from its point: a leader line says whose label it is
            axis.annotate("", (x, y), xytext=(dx, dy), textcoords="offset points",
                          arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6})
        taken.append(box)
        texts.append(text)
    return texts


def _better_arrow(axis) -> None:
    """A small arrow in a corner pointing where both numbers are better."""
    axis.annotate("better", xy=(0.97, 0.97), xytext=(0.84, 0.84), xycoords="axes fraction",
                  textcoords="axes fraction", ha="right", va="top", fontsize=8, color="0.35",
                  arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 1.0})


def plot_mu_fe(runs: Sequence[RunResult]) -> bytes:
    """One point per run: Forget Efficacy (x) against Model Utility (y), interval bars; marker = judges."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 5.2))
    markers = {combo: m for combo, m in zip(sorted({r.judges for r in runs}), "os^Dv<>p*h", strict=False)}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labelled, points, labels, xs, ys = set(), [], [], [], []
    for index, run in enumerate(runs):
        mu, fe = run.summary.get("MU"), run.summary.get("FE")
        if mu is None or fe is None:
            continue
        label = None if run.judges in labelled else "judges: {} / {}".format(*run.judges)
        labelled.add(run.judges)
        fe_bounds, mu_bounds = _bounds(run, "FE"), _bounds(run, "MU")
        xerr = [[fe - fe_bounds[0]], [fe_bounds[1] - fe]] if fe_bounds else None
        yerr = [[mu - mu_bounds[0]], [mu_bounds[1] - mu]] if mu_bounds else None
        colour = colours[index % len(colours)]
        axis.errorbar([fe], [mu], xerr=xerr, yerr=yerr, fmt=markers[run.judges], color=colour, ms=7,
                      ecolor=colour, elinewidth=1, capsize=3, alpha=0.9, label=label)
        points.append((fe, mu))
        labels.append(run.name)
        xs += [fe, *(fe_bounds or ())]
        ys += [mu, *(mu_bounds or ())]
    if points:
        axis.set_xlim(*_fitted_limits(xs))
        axis.set_ylim(*_fitted_limits(ys))
    axis.set_xlabel("Forget Efficacy \u2192 (higher: forgot more)")
    axis.set_ylabel("Model Utility \u2192 (higher: kept more)")
    axis.grid(alpha=0.3)
    has_intervals = any(r.intervals for r in runs)
    level = S.levels_label(S.interval_level(r.summary) for r in runs if r.intervals)
    axis.set_title("MU vs FE" + (f" (bars: {level} bootstrap intervals)" if has_intervals else ""), fontsize=10)
    _better_arrow(axis)
    if len(markers) > 1:  # never mix judges without saying so
        axis.legend(fontsize="x-small", loc="lower left")
    figure.tight_layout()
    if points:
        place_labels(axis, points, labels)
    return png_bytes(figure)


def plot_metrics(runs: Sequence[RunResult]) -> bytes | None:
    """One panel per headline number: each run's value and interval, the better side marked."""
    keys = [k for k in ("MU", "FE", "TOFU_MU", *(f"forget/{m}" for m in METRICS))
            if any(flat_numbers(r.summary).get(k) is not None for r in runs)]
    if not keys:
        return None
    plt = _pyplot()
    columns = 3
    rows = (len(keys) + columns - 1) // columns
    height = 0.3 * len(runs) + 1.0
    figure, axes = plt.subplots(rows, columns, figsize=(11, height * rows), squeeze=False, sharey=True)
    names = [r.name for r in runs]
    for axis, key in zip(axes.flat, keys, strict=False):
        for position, run in enumerate(runs):
            value = flat_numbers(run.summary).get(key)
            if value is None:
                continue
            bounds = _bounds(run, key)
            xerr = [[value - bounds[0]], [bounds[1] - value]] if bounds else None
            axis.errorbar([value], [position], xerr=xerr, fmt="o", ms=4, color="C0", ecolor="C0", capsize=2)
        title = TITLES.get(key, key)
        better = "higher is better" if better_direction(key) == "up" else "lower is better"
        axis.set_title(f"{title} {arrow(key)} ({better})", fontsize=9)
        axis.set_yticks(range(len(runs)), names, fontsize=8)
        axis.tick_params(axis="x", labelsize=8)
        axis.grid(alpha=0.3, axis="x")
    for axis in list(axes.flat)[len(keys):]:
        axis.set_visible(False)
    axes.flat[0].set_ylim(len(runs) - 0.5, -0.5)  # shared: the first run on top in every panel
    figure.tight_layout()
    return png_bytes(figure)


def plot_trajectories(runs: Sequence[RunResult]) -> bytes | None:
    """MU and FE against the epoch, one line per run with per-epoch evaluations, interval bands."""
    with_epochs = [r for r in runs if r.trajectory]
    if not with_epochs:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for index, run in enumerate(with_epochs):
        colour = f"C{index % 10}"
        for axis, key in zip(axes, ("MU", "FE"), strict=True):
            points = [(s.get("epoch"), s.get(key), interval_values(s).get(key)) for s in run.trajectory]
            points = [(e, v, b) for e, v, b in points if e is not None and v is not None]
            if not points:
                continue
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colour, label=run.name)
            banded = [p for p in points if p[2]]
            if len(banded) > 1:
                axis.fill_between([p[0] for p in banded], [p[2][0] for p in banded], [p[2][1] for p in banded],
                                  color=colour, alpha=0.15, linewidth=0)
    from matplotlib.ticker import MaxNLocator

    for axis, title in zip(axes, ("Model Utility \u2191", "Forget Efficacy \u2191"), strict=True):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        banded = [s for r in with_epochs for s in r.trajectory if interval_values(s)]
        level = S.levels_label(S.interval_level(s) for s in banded)
        axis.set_title(title + f" (bands: {level} intervals)" if banded else title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    return png_bytes(figure)
