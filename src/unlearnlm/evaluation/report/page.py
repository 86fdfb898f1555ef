"""The report's HTML page: one function per section, each an HTML fragment, and the page around them."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from ...tables import format_cell
from .. import statistics as S
from ..evaluate import METRIC_TITLES
from .compare import Comparison, comparison_keys
from .tables import arrow, heading, shown_columns


def _html_heading(column: str, prefix: str = "") -> str:
    """A short two-line header: ``forget<br>ROUGE ↓``."""
    if column.startswith("forget/"):
        metric = column.split("/", 1)[1]
        return f"{prefix}forget<br>{html.escape(METRIC_TITLES.get(metric, metric))} {arrow(column)}"
    return html.escape(prefix + heading(column))


def section_open_unlearning(columns: list[str], rows: list[dict]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(row[c]))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return ('<section id="open-unlearning"><h2>open-unlearning\'s TOFU numbers</h2><p>Its names and '
            "definitions (docs/formulas.md): open-unlearning's own results beside unlearnlm's evaluations "
            "with suite=open-unlearning.</p>"
            f'<div class="wide"><table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div></section>")


def section_table(columns: list[str], rows: list[dict], note: str | None, level: str) -> str:
    """``level``: the intervals' level label (statistics.levels_label of the runs shown)."""
    shown = shown_columns(columns)
    head = "".join(f"<th>{_html_heading(c)}</th>" for c in shown)
    body = "".join(
        "<tr>" + "".join(f"<td>{_html_cell(row, c)}</td>" for c in shown) + "</tr>" for row in rows
    )
    has_intervals = any(f"{c}_low" in columns for c in shown)
    explanation = ("MU = Model Utility (harmonic mean over the utility sets), FE = Forget Efficacy, TOFU_MU = TOFU's "
                   "Model Utility, FQ = Forget Quality (KS-test p-value against a retain model; no interval), "
                   "privleak = privacy leakage of Min-K% against a retain model (ideal 0, -100 = memorised), "
                   "AUC_min_k = Min-K% membership-inference AUC of forget vs holdout rows (0.5 = "
                   "indistinguishable); forget/* = the forget set's metrics (extraction_strength and "
                   "exact_memorisation: higher = more of the forget answers reproduced). \u2191 / \u2193: which way "
                   "is better; \u2192x: closest to x is best.")
    if has_intervals:
        explanation += f" Beneath each number: its {level} bootstrap interval over the evaluation's rows."
    return (f'<section id="results"><h2>Results</h2><p>{html.escape(explanation)}</p>'
            + (f'<p class="note">{html.escape(note)}</p>' if note else "")
            + f'<div class="wide"><table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            + "</div></section>")


def _html_cell(row: dict, column: str) -> str:
    value = row[column]
    low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
    sd = row.get(f"{column}_sd")
    spread = f'<br><span class="ci">sd \u00b1{sd:.4f}</span>' if sd is not None else ""
    if isinstance(value, float) and low is not None and high is not None:
        return f'{value:.4f}{spread}<br><span class="ci">{S.format_interval([low, high])}</span>'
    return html.escape(format_cell(value)) + spread


def section_comparison(comparison: Comparison | None) -> str:
    if comparison is None or not comparison.results:
        return ""
    keys = comparison_keys(comparison)
    head = "<th>run</th>" + "".join(f"<th>{_html_heading(k, prefix=chr(0x394))}</th>" for k in keys)
    body = ""
    for run, results in comparison.results.items():
        cells = ""
        for key in keys:
            result = results.get(key)
            if not result:
                cells += "<td>-</td>"
                continue
            interval = result["interval"]
            shown = f"{result['difference']:+.4f}"
            if interval:
                shown += f'<br><span class="ci">{S.format_interval(interval, signed=True)}</span>'
            css = "yes" if result["distinguishable"] else "no"
            cells += f'<td class="{css}">{shown}</td>'
        body += f"<tr><td>{html.escape(run)}</td>{cells}</tr>"
    text = (f"Each run minus {comparison.baseline}, bootstrapped on the same resampled rows "
            f"({comparison.samples} resamples, {S.percent(comparison.level)} interval). Highlighted: distinguishable "
            "(the interval excludes 0); grey: not distinguishable at this scale.")
    return (f'<section id="comparison"><h2>Paired comparison with {html.escape(comparison.baseline)}</h2>'
            f'<p>{html.escape(text)}</p><div class="wide"><table class="comparison"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div></section>")


def section_figures(images: dict[str, bytes]) -> str:
    figures = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, data in images.items()
    )
    return f'<section id="plots"><h2>Plots</h2>{figures}</section>' if figures else ""


def section_answers(examples: Sequence[dict]) -> str:
    """Per set, one table: a column per question (its ground truth beneath), a row per model."""
    if not examples:
        return ""
    parts = []
    for set_name in dict.fromkeys(e["set"] for e in examples):
        chosen = [e for e in examples if e["set"] == set_name]
        runs = list(dict.fromkeys(run for e in chosen for run in e["answers"]))
        head = "<th></th>" + "".join(
            f'<th><span class="tag {set_name}">{set_name}</span> {html.escape(e["question"])}'
            f'<div class="truth">truth: {html.escape(e["truth"])}</div></th>' for e in chosen)
        body = "".join(
            f"<tr><th>{html.escape(run)}</th>"
            + "".join(f"<td>{html.escape(e['answers'].get(run, '-'))}</td>" for e in chosen) + "</tr>"
            for run in runs)
        parts.append(f'<div class="wide"><table class="answers"><thead><tr>{head}</tr></thead>'
                     f"<tbody>{body}</tbody></table></div>")
    return ('<section id="answers"><h2>Answers side by side</h2><p>The first questions of the forget and '
            "retain sets, answered by every model (greedy decoding, as scored).</p>" + "".join(parts) + "</section>")


def section_skipped(rows: Sequence[dict]) -> str:
    skipped = "".join(f"<li><b>{html.escape(row['run'])}</b>: {html.escape(row['skipped'])}</li>"
                      for row in rows if row.get("skipped"))
    return f'<section id="skipped"><h2>Skipped metrics</h2><ul>{skipped}</ul></section>' if skipped else ""


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.55em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2) { text-align: left; }
table.results td, table.comparison td { white-space: nowrap; }
.ci { color: #777; font-size: 0.85em; white-space: nowrap; }
.note { background: #fff4d6; padding: 0.6em; border-left: 4px solid #e0a800; }
td.yes { background: #e3f1e3; font-weight: 600; } td.no { color: #888; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.wide { overflow-x: auto; margin: 0.6em 0 1.2em; }
.truth { color: #555; font-size: 0.9em; font-weight: normal; margin-top: 0.3em; }
table.answers { table-layout: fixed; width: 100%; }
table.answers th, table.answers td { text-align: left; }
table.answers tbody th { white-space: nowrap; font-weight: normal; width: 7em; }
table.answers thead th:first-child { width: 7em; }
.tag { font-size: 0.75em; padding: 0.1em 0.4em; border-radius: 3px; color: white; background: #888; }
.tag.forget { background: #c0392b; } .tag.retain { background: #2e7d32; }
"""


# Sets data-images on <body> to how many figures decoded, so a browser test can check them.
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images', images.filter(function (i) { return i.naturalWidth > 0; }).length);
});
</script>"""


def html_page(sections: Sequence[str]) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>unlearnlm report</title>
<style>{STYLE}</style></head><body>
<h1>Unlearning report</h1>
{"".join(s for s in sections if s)}
{CHECK_SCRIPT}
</body></html>
"""
