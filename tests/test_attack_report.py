"""The report's method x attack recovery table and plot (attack summaries made in-test)."""

from __future__ import annotations

import csv
import json

import yaml
from test_report import PNG_MAGIC, _summary, _write

from unlearnlm.evaluation.report import write_report


def _attacked_run(tmp_path, name, method, recoveries, intervals=None, forgetting=None, metric_intervals=None):
    run = tmp_path / name
    _write(run / "eval", _summary(0.5, 0.7))
    (run / "config.yaml").write_text(yaml.safe_dump({"method": method}))
    attacks = []
    for attack, values in recoveries.items():
        present = [v for v in values.values() if v is not None]
        attacks.append({"attack": attack, "rows": 4, "FE": 0.5, "MU": 0.4, "recovery": values,
                        "mean_recovery": sum(present) / len(present) if present else None,
                        "mean_recovery_interval": (intervals or {}).get(attack),
                        "forgetting_interval": (forgetting or {}).get(attack),
                        "recovery_interval": (metric_intervals or {}).get(attack, {})})
    (run / "attacks").mkdir()
    (run / "attacks" / "summary.json").write_text(json.dumps({
        "unlearned": {"FE": 0.7, "MU": 0.5}, "attacks": attacks,
        "skipped": [{"attack": "quantize:bnb-nf4", "reason": "no CUDA GPU"}]}))
    return run


def test_report_shows_method_by_attack_recovery(tmp_path):
    ga = _attacked_run(tmp_path, "ga", "GA+GD", {"relearn:forget_half": {"rouge": 0.5, "probability": 1.0},
                                                  "quantize:4bit": {"rouge": 0.1, "probability": None}},
                       intervals={"relearn:forget_half": [0.2, 1.1]},
                       metric_intervals={"relearn:forget_half": {"rouge": [0.2, 0.9], "probability": [-0.1, 1.5]}})
    me = _attacked_run(tmp_path, "me", "ME+GD", {"quantize:4bit": {"rouge": 0.0, "probability": 0.2},
                                                  "probe:role_play": {"rouge": None, "probability": None}},
                       intervals={"quantize:4bit": [-0.2, 0.4]},
                       metric_intervals={"quantize:4bit": {"rouge": [-0.3, 0.3], "probability": [-0.2, 0.6]}})
    # RMU barely forgot: its FE over the target's has an interval holding 0
    rmu = _attacked_run(tmp_path, "rmu", "RMU", {"relearn:forget_half": {"rouge": 13.0, "probability": None}},
                        intervals={"relearn:forget_half": [-5e6, 7e5]},
                        forgetting={"relearn:forget_half": [-0.02, 0.03]})
    plain = tmp_path / "plain"
    _write(plain, _summary(0.6, 0.1))
    page = write_report([str(ga), str(me), str(rmu), str(plain)], tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Robustness: recovery under attack" in markdown
    assert "| method | FE | MU | relearn:forget_half | quantize:4bit | probe:role_play |" in markdown
    # mean over the metrics with a value: (0.5 + 1.0) / 2; 0.1; not run; (0.0 + 0.2) / 2; no value
    assert "| GA+GD (ga) | 0.70 | 0.50 | 0.75 [.20,1.10] | 0.10 | - |" in markdown
    assert "| ME+GD (me) | 0.70 | 0.50 | - | 0.10 [-.20,.40] | - |" in markdown
    assert "Skipped: quantize:bnb-nf4 (no CUDA GPU)" in markdown
    # in words: GA+GD's relearned ROUGE interval lies above 0 (its probability's holds 0); RMU forgot
    # nothing distinguishable; ME+GD's 4-bit intervals hold 0, GA+GD's 4-bit has none
    assert ("- **relearn:forget_half**: knowledge came back for GA+GD (ga) (ROUGE 0.50 [.20,.90]); nothing "
            "distinguishable to recover (FE not above the target's) for RMU (rmu)." in markdown)
    assert ("- **quantize:4bit**: no distinguishable recovery for ME+GD (me); "
            "too few rows to tell for GA+GD (ga)." in markdown)
    with open(tmp_path / "out" / "report_attacks.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["method"], r["attack"]) for r in rows] == [("GA+GD (ga)", "relearn:forget_half"),
                                                          ("GA+GD (ga)", "quantize:4bit"),
                                                          ("ME+GD (me)", "quantize:4bit"),
                                                          ("ME+GD (me)", "probe:role_play"),
                                                          ("RMU (rmu)", "relearn:forget_half")]
    assert float(rows[0]["recovery/probability"]) == 1.0 and rows[1]["recovery/probability"] == ""
    assert (float(rows[0]["mean_recovery_low"]), float(rows[0]["mean_recovery_high"])) == (0.2, 1.1)
    assert rows[1]["mean_recovery_low"] == rows[1]["recovery/rouge_low"] == ""
    assert (tmp_path / "out" / "attacks.png").read_bytes().startswith(PNG_MAGIC)
    assert page.read_text().count("data:image/png;base64,") == 3  # MU-vs-FE, metrics with intervals, recovery


def test_no_attack_summaries_no_attack_section(tmp_path):
    plain = tmp_path / "plain"
    _write(plain, _summary(0.6, 0.1))
    write_report([str(plain)], tmp_path / "out")
    assert "Robustness" not in (tmp_path / "out" / "report.md").read_text()
    assert not (tmp_path / "out" / "attacks.png").exists()
