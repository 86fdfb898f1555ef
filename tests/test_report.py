"""``unlearnlm report``: comparison table, plots and page over evaluated runs (summaries made in-test)."""

from __future__ import annotations

import csv
import json

import yaml

from unlearnlm.cli import main
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
    assert html.count("data:image/png;base64,") == 2 and "different judges" in html
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
