"""One method, several seeds: a run per seed, reused when done, aggregated (mean ± sd, pooled interval)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from test_evaluate import tofu_folder  # noqa: F401  (the fixture)

from unlearnlm.cli import main
from unlearnlm.evaluation import evaluate as E
from unlearnlm.evaluation import runs
from unlearnlm.evaluation import statistics as S
from unlearnlm.evaluation.report import write_report


def _unlearn(tiny_model, tofu_folder, run, *extra):  # noqa: F811
    return main(["unlearn", f"model.name_or_path={tiny_model}", f"data.source={tofu_folder}", "data.forget=forget",
                 "data.retain=retain", "method=GA+GD", f"output_dir={run}", "training.epochs=1",
                 "training.per_device_batch_size=4", "training.gradient_accumulation_steps=1", "training.lr=1e-2",
                 "training.warmup_epochs=0", "training.progress=false", "eval_every_epoch=true",
                 "evaluation.judges.embedder=none", "evaluation.judges.nli=none", "evaluation.max_length=24",
                 "evaluation.ds_size=3", "evaluation.bootstrap.samples=200", "seeds=[11,12]", *extra])


def test_seeds_run_once_each_and_aggregate(tiny_model, tofu_folder, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    assert _unlearn(tiny_model, tofu_folder, run) == 0
    printed = capsys.readouterr().out
    for seed in (11, 12):
        saved = yaml.safe_load((run / f"seed_{seed}" / "config.yaml").read_text())
        assert saved["training"]["seed"] == seed and saved["seeds"] is None
        assert (run / f"seed_{seed}" / "train_summary.json").exists()
    assert json.loads((run / "seeds.json").read_text())["seeds"] == [11, 12]
    # the aggregate, recomputed here from each seed's last per-epoch evaluation
    last = [run / f"seed_{s}" / "eval" / "epoch_1" for s in (11, 12)]
    summaries = [json.loads((f / "summary.json").read_text()) for f in last]
    aggregate = json.loads((run / "seeds_summary.json").read_text())
    mus = [s["MU"] for s in summaries]
    fes = [s["FE"] for s in summaries]
    assert mus[0] != mus[1] or fes[0] != fes[1]  # the seeds trained differently
    assert aggregate["MU"] == pytest.approx(np.mean(mus))
    assert aggregate["seeds"]["spread"]["FE"]["sd"] == pytest.approx(np.std(fes, ddof=1))
    assert aggregate["seeds"]["spread"]["MU"]["n"] == 2
    replicates = [S.bootstrap(runs.read_set_rows(f), E.scoring("tofu"), 1000, 0) for f in last]
    pooled = (replicates[0].values["MU"] + replicates[1].values["MU"]) / 2
    assert aggregate["intervals"]["values"]["MU"] == pytest.approx(list(np.quantile(pooled, [0.025, 0.975])))
    assert "over seeds 11, 12" in printed and "\u00b1" in printed

    # a seed already run is not redone
    assert _unlearn(tiny_model, tofu_folder, run) == 0
    assert capsys.readouterr().out.count("already holds this finished run") == 2

    # the report shows the seeds as one row, mean ± sd, and compares them pairwise with a baseline
    target = tmp_path / "target_eval"
    assert main(["evaluate", str(tiny_model), f"data.source={tofu_folder}", "data.forget=forget",
                 "judges.embedder=none", "judges.nli=none", "max_length=24", "ds_size=3",
                 f"output_dir={target}"]) == 0
    page = write_report([str(target), str(run)], tmp_path / "report", baseline="target_eval")
    with open(page.parent / "report.csv", newline="") as handle:
        rows = {r["run"]: r for r in csv.DictReader(handle)}
    assert rows["run"]["seeds"] == "2" and float(rows["run"]["MU"]) == pytest.approx(np.mean(mus))
    assert "\u00b1" in (page.parent / "report.md").read_text()
    with open(page.parent / "comparison.csv", newline="") as handle:
        assert any(r["run"] == "run" and r["number"] == "MU" for r in csv.DictReader(handle))


def test_duplicate_seeds_are_a_user_error(tiny_model, tofu_folder, tmp_path, capsys):  # noqa: F811
    assert _unlearn(tiny_model, tofu_folder, tmp_path / "run", "seeds=[3,3]") == 2
    assert "seeds lists a seed twice" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

