"""``unlearnlm report``: comparison table, plots and page over evaluated runs (summaries made in-test)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from unlearnlm.cli import main
from unlearnlm.config import BootstrapConfig
from unlearnlm.evaluation import evaluate as E
from unlearnlm.evaluation import metrics as M
from unlearnlm.evaluation import runs
from unlearnlm.evaluation import statistics as S
from unlearnlm.evaluation.metrics import METRICS
from unlearnlm.evaluation.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _summary(mu, fe, embedder="emb-a", nli="nli-a", epoch=None):
    summary = {
        "model": "m", "scenario": "tofu", "judges": {"embedder": embedder, "nli": nli},
        "MU": mu, "MU_retain": mu, "FE": fe,
        "sets": {"forget": {"role": "forget", "rows": 4, "metrics": {m: 0.25 for m in METRICS}}},
        "skipped": ["FQ (no retain_eval given)"],
    }
    if epoch is not None:
        summary["epoch"] = epoch
    return summary


def _write(folder, summary):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary))


def _runs(tmp_path, second_judges=("emb-a", "nli-a")):
    """An unlearning run with three per-epoch evaluations, and a plain evaluation folder."""
    run = tmp_path / "me_gd"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "ME+GD"}))
    for epoch, (mu, fe) in enumerate([(0.6, 0.1), (0.55, 0.5), (0.5, 0.8)]):
        _write(run / "eval" / f"epoch_{epoch}", _summary(mu, fe, epoch=epoch))
    plain = tmp_path / "target_eval"
    _write(plain, _summary(0.62, 0.05, *second_judges))
    return run, plain


def test_report_table_plots_and_page(tmp_path):
    run, plain = _runs(tmp_path, second_judges=("emb-b", "none"))
    page = write_report([str(run), str(plain)], tmp_path / "report")
    out = tmp_path / "report"
    assert page == out / "report.html"
    with open(out / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run"] for r in rows] == ["me_gd", "target_eval"]
    # the run without a final evaluation shows its last epoch
    assert rows[0]["method"] == "ME+GD" and rows[0]["epoch"] == "2" and float(rows[0]["FE"]) == 0.8
    assert (rows[0]["embedder"], rows[0]["nli"]) == ("emb-a", "nli-a")
    assert (rows[1]["embedder"], rows[1]["nli"]) == ("emb-b", "none")
    markdown = (out / "report.md").read_text()
    assert "| embedder | nli |" in markdown and "different judges" in markdown
    for png in ("mu_fe.png", "trajectories.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 3 and "different judges" in html
    assert "FQ (no retain_eval given)" in html


def test_same_judges_need_no_note_and_no_epochs_no_trajectory_plot(tmp_path):
    plain_a = tmp_path / "a"
    plain_b = tmp_path / "b"
    _write(plain_a, _summary(0.5, 0.5))
    _write(plain_b, _summary(0.4, 0.7))
    write_report([str(plain_a), str(plain_b)], tmp_path / "out")
    assert "different judges" not in (tmp_path / "out" / "report.md").read_text()
    assert not (tmp_path / "out" / "trajectories.png").exists()


def test_report_command_and_its_errors(tmp_path, capsys):
    run, plain = _runs(tmp_path)
    assert main(["report", str(run), str(plain), "-o", str(tmp_path / "out")]) == 0
    assert "report written to" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "holds no evaluation" in error


# ---- intervals, paired comparisons, the page in a browser ----------------------------------------

LAYOUT = [("forget", "forget", 10), ("retain", "retain", 10), ("real_authors", "utility", 20),
          ("world_facts", "utility", 20)]


def _records(seed, forget_shift=0.0):
    """Per-row records of four sets; ``forget_shift`` lowers the forget set's scores (more forgotten)."""
    rng = np.random.default_rng(seed)
    sets = []
    for name, role, n in LAYOUT:
        rows = []
        for i in range(n):
            shift = forget_shift if role == "forget" else 0.0

            def value(shift=shift):
                return float(np.clip(rng.uniform(0.3, 0.9) - shift, 0.01, 1.0))

            rows.append({"question": f"{name} question {i}?", "ground_truth": f"answer {i}",
                         "generation": f"{'I do not know' if shift > 0.3 else 'answer'} {i} from model {seed}",
                         "rouge_recall": value(), "probability": value(), "truth_ratio": value() * 2,
                         "token_entropy": value(), "cosine": value(), "entailed": bool(rng.random() > 0.4)})
        sets.append(S.SetRows(name, role, rows))
    return sets


def _evaluation(folder, sets, bootstrap=True):
    (folder / "records").mkdir(parents=True)
    results = {}
    for s in sets:
        (folder / "records" / f"{s.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in s.rows))
        results[s.name] = {"role": s.role, "rows": len(s.rows), "metrics": M.set_metrics(s.rows, s.forget_form)}
    summary = {"model": str(folder), "scenario": "tofu", "judges": {"embedder": "emb", "nli": "nli"},
               "sets": results, "skipped": []}
    for key, value in E.aggregates(results, "tofu").items():
        summary[key], summary[f"{key}_n_values"] = value["value"], value["n_values"]
    if bootstrap:
        E.add_intervals(summary, sets, BootstrapConfig(samples=300))
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _demo_like(tmp_path):
    """A target, a retain model and six methods, four of them nearly on one spot of MU-vs-FE."""
    base = _records(0)
    folders = [_evaluation(tmp_path / "target", base)]
    for index, (name, shift) in enumerate([("retain", 0.25), ("me-gd", 0.4), ("idk-ap", 0.02), ("ga-gd", 0.03),
                                           ("npo-gd", 0.02), ("dpo-gd", 0.03), ("idk-gd", 0.01)]):
        sets = _records(index + 1, forget_shift=shift)
        for s, b in zip(sets, base, strict=True):  # the same questions as the target
            for row, base_row in zip(s.rows, b.rows, strict=True):
                row["question"], row["ground_truth"] = base_row["question"], base_row["ground_truth"]
        folders.append(_evaluation(tmp_path / name, sets))
    return folders


def test_report_shows_intervals_and_the_paired_comparison(tmp_path):
    folders = _demo_like(tmp_path)
    page = write_report([str(f) for f in folders], tmp_path / "report", baseline="target")
    out = tmp_path / "report"
    with open(out / "report.csv", newline="") as handle:
        rows = {r["run"]: r for r in csv.DictReader(handle)}
    target = json.loads((folders[0] / "summary.json").read_text())
    assert float(rows["target"]["MU_low"]) == pytest.approx(target["intervals"]["values"]["MU"][0])
    markdown = (out / "report.md").read_text()
    low, high = target["intervals"]["values"]["MU"]
    assert f"{target['MU']:.4f} [{low:.2f}, {high:.2f}]" in markdown
    assert "Difference from target" in markdown and "| MU \u2191 |" in markdown and "forget/rouge \u2193" in markdown
    with open(out / "comparison.csv", newline="") as handle:
        comparison = list(csv.DictReader(handle))
    me_gd = {r["number"]: r for r in comparison if r["run"] == "me-gd"}
    assert "target" not in {r["run"] for r in comparison}
    # me-gd forgot much more (forget scores 0.4 lower): its forget ROUGE drop is distinguishable
    assert float(me_gd["forget/rouge"]["difference"]) < 0 and me_gd["forget/rouge"]["distinguishable"] == "True"
    # the differences are the paired bootstrap on the same resampled rows, recomputed here
    base = S.bootstrap(runs.read_set_rows(folders[0]), E.scoring("tofu"), 300, 0)
    mine = S.bootstrap(runs.read_set_rows(folders[2]), E.scoring("tofu"), 300, 0)
    expected = S.paired_difference(mine, base)["FE"]
    assert float(me_gd["FE"]["low"]) == pytest.approx(expected["interval"][0])
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2  # MU-FE and per-metric plots (no epochs)
    assert 'id="comparison"' in text and 'id="answers"' in text and "from model 0" in text
    assert (out / "metrics.png").read_bytes().startswith(PNG_MAGIC)


def test_report_refuses_a_baseline_on_other_rows_or_unknown(tmp_path, capsys):
    a = _evaluation(tmp_path / "a", _records(0))
    other = _records(1)
    other[0].rows[0]["question"] = "a question the baseline never saw?"
    b = _evaluation(tmp_path / "b", other)
    assert main(["report", str(a), str(b), "-o", str(tmp_path / "out"), "--baseline", "a"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "set 'forget' holds other rows" in error
    assert main(["report", str(a), str(b), "-o", str(tmp_path / "out"), "--baseline", "nobody"]) == 2
    assert "no run is named 'nobody'" in capsys.readouterr().err
    assert main(["report", str(a), str(a.parent / "a"), "-o", str(tmp_path / "out")]) == 2  # a run and itself
    assert "are the same run" in capsys.readouterr().err


def test_labels_never_overlap_on_the_mu_fe_plot():
    """Six points on one spot: every label box is clear of the others (deterministic placement)."""
    from unlearnlm.evaluation.report.plots import place_labels
    from unlearnlm.figures import pyplot as _pyplot

    plt = _pyplot()
    points = [(0.41, 0.40), (0.415, 0.401), (0.42, 0.399), (0.41, 0.405), (0.43, 0.40), (0.412, 0.398)]
    labels = ["ME+GD", "IDK+AP", "GA+GD", "NPO+GD", "DPO+GD", "IDK+GD"]

    def placed():
        figure, axis = plt.subplots(figsize=(7, 5.2))
        axis.scatter([p[0] for p in points], [p[1] for p in points])
        axis.set_xlim(0.3, 0.6)
        axis.set_ylim(0.3, 0.5)
        texts = place_labels(axis, points, labels)
        renderer = figure.canvas.get_renderer()
        return [t.get_window_extent(renderer) for t in texts], [t.get_position() for t in texts]

    boxes, positions = placed()
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    assert placed()[1] == positions
    plt.close("all")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_the_page_renders_in_headless_chromium(tmp_path):
    folders = _demo_like(tmp_path)
    run = tmp_path / "epochs_run"  # a run with per-epoch evaluations: the trajectory plot
    (run / "eval").mkdir(parents=True)
    for epoch in range(3):
        _evaluation(run / "eval" / f"epoch_{epoch}", _records(10 + epoch, forget_shift=0.1 * epoch))
        summary = json.loads((run / "eval" / f"epoch_{epoch}" / "summary.json").read_text())
        summary["epoch"] = epoch
        (run / "eval" / f"epoch_{epoch}" / "summary.json").write_text(json.dumps(summary))
    page = write_report([str(f) for f in folders] + [str(run)], tmp_path / "report", baseline="target")
    profile = tmp_path / "profile"
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*command, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-images="3"' in dom.stdout  # all three figures decoded
    for section in ('id="results"', 'id="comparison"', 'id="plots"', 'id="answers"'):
        assert section in dom.stdout
    assert dom.stdout.count("<tr>") > 10
    screenshot = tmp_path / "page.png"
    shot = subprocess.run([*command, f"--screenshot={screenshot}", "--window-size=1280,4000", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and screenshot.read_bytes().startswith(PNG_MAGIC)


def test_open_unlearnings_own_results_sit_beside_the_suites_numbers(tmp_path, capsys):
    """Its TOFU_SUMMARY.json / TOFU_EVAL.json (hand-written in its layout) next to an unlearnlm
    evaluation run with suite=open-unlearning; a malformed file is a one-line error."""
    ours = tmp_path / "ours"
    _write(ours, dict(_summary(0.5, 0.5), open_unlearning={"forget_Q_A_Prob": 0.9, "model_utility": 0.25,
                                                           "privleak": -25.8}))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "TOFU_SUMMARY.json").write_text(json.dumps(
        {"forget_Q_A_Prob": 0.91, "forget_quality": 0.0012, "model_utility": 0.2417, "privleak": -24.1}))
    eval_only = tmp_path / "eval_only"
    eval_only.mkdir()
    (eval_only / "TOFU_EVAL.json").write_text(json.dumps({
        "forget_Q_A_Prob": {"agg_value": 0.8, "value_by_index": {"0": {"prob": 0.8, "avg_loss": 0.22}}},
        "model_utility": {"agg_value": 0.3}}))
    plain = tmp_path / "plain"
    _write(plain, _summary(0.4, 0.7))
    write_report([str(ours), str(theirs), str(eval_only / "TOFU_EVAL.json"), str(plain)], tmp_path / "out")
    out = tmp_path / "out"
    with open(out / "report_open_unlearning.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["run"], r["computed by"]) for r in rows] == [
        ("ours", "unlearnlm"), ("theirs", "open-unlearning"), ("eval_only", "open-unlearning")]
    assert float(rows[1]["model_utility"]) == 0.2417 and float(rows[1]["forget_quality"]) == 0.0012
    assert rows[0]["forget_quality"] == "" and float(rows[2]["forget_Q_A_Prob"]) == 0.8
    with open(out / "report.csv", newline="") as handle:
        assert [r["run"] for r in csv.DictReader(handle)] == ["ours", "plain"]  # its results: own table only
    assert "open-unlearning's TOFU numbers" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert '<section id="open-unlearning">' in page and "0.2417" in page

    (theirs / "TOFU_SUMMARY.json").write_text('{"model_utility": "0.24"}')
    assert main(["report", str(ours), str(theirs), "-o", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("unlearnlm: error:") and "'model_utility' is str, not a number" in error
    assert "\n" not in error
