"""Silent successes: inputs on which a command used to exit 0 with a number that means nothing.
Each case must end in one line naming the problem, or in a visible warning that names it, and
never in a number presented as valid (issue 25)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from unlearnlm.cli import main


def one_line(code: int, err: str, *pieces: str) -> str:
    # transformers' own progress bar of a checkpoint save is not ours (see test_divergence)
    lines = [line for line in err.strip().splitlines() if "Writing model shards" not in line]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("unlearnlm: error: "), err
    for piece in pieces:
        assert piece in lines[0], f"{piece!r} not in {lines[0]!r}"
    return lines[0]


def unlearn(model, qa_folder, out, *extra) -> list[str]:
    return ["unlearn", f"model.name_or_path={model}", f"data.source={qa_folder}", "data.forget=forget.json",
            "data.retain=retain.json", "data.task_id=1", "method=GA+GD", "training.progress=false",
            f"output_dir={out}", *extra]


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


# ---- a run proves it did something ------------------------------------------------------------

# (extra settings, pieces of the error, whether the refusal comes before the folder is written)
NO_OP_RUNS = {
    # 4 forget rows, a batch of 16: one step, which a one-epoch warm-up gives a learning rate of 0.
    "warm-up-covers-the-run": (["training.epochs=1"], ["learning rate is 0 at every one", "warmup_epochs"], True),
    "warm-up-covers-the-run-cosine": (["training.epochs=1", "training.lr_scheduler=cosine"],
                                      ["learning rate is 0", "lr_scheduler=cosine"], True),
    # CE-U skipping every label: loss 0, gradient 0; only the weight decay would move a weight.
    "every-label-skipped": (["method=CE-U", "method_args.skip_first=1000", "training.epochs=2",
                             "training.warmup_epochs=0"], ["training did nothing", "every gradient was 0"], False),
    "every-label-skipped-no-decay": (["method=CE-U", "method_args.skip_first=1000", "training.epochs=2",
                                      "training.warmup_epochs=0", "training.weight_decay=0"],
                                     ["training did nothing", "no weight moved", "every gradient was 0"], False),
}


@pytest.mark.parametrize("case", list(NO_OP_RUNS))
def test_a_run_that_trains_nothing_is_an_error(case, tiny_model, qa_folder, tmp_path, capsys):
    extra, pieces, before_folder = NO_OP_RUNS[case]
    out = tmp_path / "run"
    one_line(main(unlearn(tiny_model, qa_folder, out, *extra)), capsys.readouterr().err, *pieces)
    assert not (out / "model").exists() and not (out / "train_summary.json").exists()
    if before_folder:  # refused before any folder is written: the corrected rerun is not blocked
        assert not out.exists()
        assert main(unlearn(tiny_model, qa_folder, out, *extra, "training.warmup_epochs=0")) == 0
        assert any(not torch.equal(a, b) for a, b in zip(weights_of(tiny_model).values(),
                                                          weights_of(out / "model").values(), strict=True))


def test_a_finetune_that_trains_nothing_is_refused(tiny_model, qa_folder, tmp_path, capsys):
    out = tmp_path / "ft"
    code = main(["finetune", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", "data.train=forget",
                 "training.epochs=1", "training.per_device_batch_size=16", "training.progress=false",
                 f"output_dir={out}"])
    one_line(code, capsys.readouterr().err, "learning rate is 0")
    assert not out.exists()


def test_learning_rates_by_hand():
    """The schedule check counts steps as the Trainer does: a warm-up's first step is at lr 0."""
    from unlearnlm.config import TrainingConfig
    from unlearnlm.errors import UserError
    from unlearnlm.training.trainer import check_learning_rates, optimizer_steps

    one_step = TrainingConfig(epochs=1, per_device_batch_size=4, gradient_accumulation_steps=4, warmup_epochs=1)
    assert optimizer_steps(one_step, 16) == 1 and optimizer_steps(one_step, 17) == 2  # ceil(17 / 4) = 5 batches
    with pytest.raises(UserError, match="0 at every one of the run's 1 optimiser step"):
        check_learning_rates(one_step, 16)
    check_learning_rates(one_step, 17)  # 2 steps, a 2-step warm-up: the second step is at lr / 2
    check_learning_rates(TrainingConfig(epochs=1, warmup_epochs=0), 16)


def test_a_blow_up_on_the_last_step_writes_no_model(tiny_model, qa_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(unlearn(tiny_model, qa_folder, out, "training.lr=1e10", "training.epochs=1",
                        "training.warmup_epochs=0"))
    one_line(code, capsys.readouterr().err, "logits are NaN or infinite", "not written")
    assert not (out / "model").exists() and not (out / "train_summary.json").exists()


def test_the_last_good_checkpoint_has_finite_logits(tiny_model, qa_folder, tmp_path, capsys):
    """Checked before a checkpoint is kept: the one the error names gives finite logits."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    code = main(unlearn(tiny_model, qa_folder, out, "data.task_id=1,2", "training.lr=1e6", "training.epochs=2",
                        "training.per_device_batch_size=2", "training.gradient_accumulation_steps=1",
                        "training.save_steps=1", "training.warmup_epochs=0"))
    line = one_line(code, capsys.readouterr().err, "NaN or infinite", "last good checkpoint is")
    kept = Path(line.split("last good checkpoint is ")[1].split(" (step")[0])
    model = AutoModelForCausalLM.from_pretrained(kept)
    logits = model(input_ids=torch.tensor([[1, 5, 9, 14, 3]])).logits
    assert torch.isfinite(logits).all()
    assert not (out / "model").exists()


def test_a_checkpoint_with_finite_weights_but_infinite_logits_is_not_kept(tiny_model):
    from transformers import AutoModelForCausalLM, TrainerControl, TrainerState, TrainingArguments

    from unlearnlm.training.trainer import CheckpointCallback, TrainingDiverged

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():  # finite weights whose attention scores overflow: NaN logits
        model.model.layers[0].input_layernorm.weight.fill_(3e38)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    state, control = TrainerState(), TrainerControl()
    state.global_step, state.max_steps = 2, 10
    args = TrainingArguments(output_dir="unused", logging_steps=1, report_to="none", use_cpu=True)
    with pytest.raises(TrainingDiverged, match="the logits became NaN or infinite at step 2"):
        CheckpointCallback(save_steps=1, save_minutes=0, probe=[1, 5, 9]).on_step_end(args, state, control,
                                                                                      model=model)


# ---- an evaluation refuses a broken model -----------------------------------------------------------

def _spoiled_copy(tiny_model, folder: Path, spoil) -> Path:
    shutil.copytree(tiny_model, folder)
    weights = weights_of(folder)
    spoil(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


BROKEN_MODELS = {
    "nan-weight": (lambda w: w[next(k for k in w if "mlp" in k)].view(-1).__setitem__(0, float("nan")), "weights"),
    "inf-weight": (lambda w: w[next(k for k in w if "norm" in k)].view(-1).__setitem__(0, float("inf")), "weights"),
    # finite weights whose attention scores overflow: NaN logits
    "huge-weights": (lambda w: w["model.layers.0.input_layernorm.weight"].fill_(3e38), "logits"),
}


@pytest.mark.parametrize("case", list(BROKEN_MODELS))
def test_an_evaluation_refuses_a_broken_model(case, tiny_model, evaluated_runs, tmp_path, capsys):
    spoil, part = BROKEN_MODELS[case]
    model = _spoiled_copy(tiny_model, tmp_path / "broken", spoil)
    root = evaluated_runs["root"]
    code = main(["evaluate", str(model), "scenario=custom", f"data.custom_forget={root / 'forget.json'}",
                 "judges.embedder=none", "judges.nli=none", "max_length=24", f"output_dir={tmp_path / 'eval'}"])
    one_line(code, capsys.readouterr().err, str(model), f"its {part} hold NaN or infinite values")
    assert not (tmp_path / "eval" / "summary.json").exists()


# ---- privacy numbers from a meaningless holdout -------------------------------------------------------

def _evaluate(evaluated_runs, tmp_path, *extra) -> tuple[int, Path]:
    root = evaluated_runs["root"]
    out = tmp_path / "eval"
    code = main(["evaluate", str(root / "run"), "scenario=custom", f"data.custom_forget={root / 'forget.json'}",
                 "judges.embedder=none", "judges.nli=none", "max_length=24", "bootstrap.samples=100",
                 f"output_dir={out}", *extra])
    return code, out


def test_a_holdout_of_forget_rows_is_refused(evaluated_runs, tmp_path, capsys):
    root = evaluated_runs["root"]
    rows = [json.loads(line) for line in (root / "forget.json").read_text().splitlines()]
    # The same questions, written another way (spacing, case): still the forget rows.
    (tmp_path / "h.json").write_text("".join(json.dumps(dict(r, question="  " + r["question"].upper())) + "\n"
                                             for r in rows[1:]))
    code, out = _evaluate(evaluated_runs, tmp_path, f"data.holdout={tmp_path / 'h.json'}")
    one_line(code, capsys.readouterr().err, "data.holdout shares 3 of its 3 questions with the forget set")
    assert not out.exists()


@pytest.mark.parametrize("holdout_rows", [1, 2])
def test_a_holdout_too_small_gives_no_auc_and_says_the_minimum(holdout_rows, evaluated_runs, tmp_path, capsys):
    root = evaluated_runs["root"]
    rows = (root / "holdout.json").read_text().splitlines()[:holdout_rows]
    (tmp_path / "h.json").write_text("\n".join(rows) + "\n")
    code, out = _evaluate(evaluated_runs, tmp_path, f"data.holdout={tmp_path / 'h.json'}")
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert not [k for k in summary if k.startswith("AUC_") or k == "privleak"]
    assert not [k for k in summary["intervals"]["values"] if k.startswith("AUC_") or k == "privleak"]
    reason = f"at least 3 rows on each side; the forget set has 4, the holdout {holdout_rows}"
    assert any(reason in s for s in summary["skipped"]) and reason in printed


def test_privleak_against_a_reference_auc_of_one_is_undefined():
    from unlearnlm.evaluation.evaluate import privacy_aggregates

    forget = [{"question": f"f{i}", "mia_min_k": float(i)} for i in range(4)]
    holdout = [{"question": f"h{i}", "mia_min_k": float(i) + 10} for i in range(4)]
    numbers, skipped = privacy_aggregates(forget, holdout, {"min_k": 1.0}, "")
    assert "privleak" not in numbers and numbers["AUC_min_k"] == 1.0
    assert any("privleak (the reference model's AUC is 1 (A_R = 0)" in s for s in skipped)


def test_muse_privleak_of_too_few_texts_is_refused(tmp_path, capsys):
    folder = tmp_path / "muse"
    for name in ("forget", "holdout"):
        (folder / "privleak").mkdir(parents=True, exist_ok=True)
        (folder / "privleak" / f"{name}.json").write_text(json.dumps([{"text": f"{name} text one"}]))
    code = main(["muse", "unlearn.model.name_or_path=/nonexistent/m", f"evaluation.source={folder}",
                 "evaluation.metrics=privleak", "train=false", f"output_dir={tmp_path / 'out'}"])
    one_line(code, capsys.readouterr().err, "privleak", "at least 3 rows on each side")


# ---- intervals that are not intervals ------------------------------------------------------------------

@pytest.mark.parametrize("samples", ["1", "2", "99"])
def test_intervals_below_the_sample_floor_are_refused(samples, evaluated_runs, capsys):
    before = (evaluated_runs["target"] / "summary.json").read_text()
    code = main(["intervals", str(evaluated_runs["target"]), f"samples={samples}"])
    one_line(code, capsys.readouterr().err, "samples must be at least 100", f"got {samples}")
    assert (evaluated_runs["target"] / "summary.json").read_text() == before


@pytest.mark.parametrize("samples", ["1", "50"])
def test_an_evaluation_with_too_few_samples_is_refused(samples, evaluated_runs, tmp_path, capsys):
    code, out = _evaluate(evaluated_runs, tmp_path, f"bootstrap.samples={samples}")
    one_line(code, capsys.readouterr().err, "bootstrap.samples must be zero (no intervals) or at least 100")
    assert not out.exists()


def test_a_set_of_one_row_gets_no_interval_and_says_so(evaluated_runs, tmp_path, capsys):
    root = evaluated_runs["root"]
    (tmp_path / "one.json").write_text((root / "retain.json").read_text().splitlines()[0] + "\n")
    code, out = _evaluate(evaluated_runs, tmp_path, f"data.custom_retain={tmp_path / 'one.json'}")
    printed = capsys.readouterr().out
    assert code == 0
    block = json.loads((out / "summary.json").read_text())["intervals"]
    assert all(v is None for k, v in block["values"].items() if k.startswith("one/"))
    assert "1 row: an interval needs at least 2 rows" in block["undefined"]["one"]
    assert "no interval on one: 1 row" in printed
    assert any(v for k, v in block["values"].items() if k.startswith("forget/"))  # the others keep theirs


@pytest.mark.parametrize("damage", ["emptied", "one-row-dropped"])
def test_records_short_of_the_summary_are_refused(damage, evaluated_runs, tmp_path, capsys):
    folder = tmp_path / "eval"
    shutil.copytree(evaluated_runs["target"], folder)
    records = folder / "records" / "forget.jsonl"
    lines = records.read_text().splitlines()
    records.write_text("" if damage == "emptied" else "\n".join(lines[:-1]) + "\n")
    code = main(["intervals", str(folder), "samples=100"])
    one_line(code, capsys.readouterr().err, str(records), "where", "counts 4", "evaluate again")
    assert "intervals" in json.loads((folder / "summary.json").read_text())  # left as it was


# ---- reports ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("second", ["same", "its-eval", "through-dot-dot"])
def test_a_run_compared_with_itself_is_refused(second, evaluated_runs, tmp_path, capsys):
    run = evaluated_runs["run"]
    other = {"same": run, "its-eval": run / "eval", "through-dot-dot": run / ".." / run.name}[second]
    code = main(["report", str(run), str(other), "--output", str(tmp_path / "report")])
    one_line(code, capsys.readouterr().err, "same run")
    assert not (tmp_path / "report").exists()


def test_paired_privleak_uses_each_runs_own_reference(evaluated_runs, tmp_path):
    """The run's privleak is against the target's AUC (retain_eval), the target's against 0.5:
    their paired difference is the difference of the two numbers the summaries print."""
    from unlearnlm.evaluation.report.compare import compare_with_baseline
    from unlearnlm.evaluation.report.load import load_run

    run, target = load_run(evaluated_runs["run"]), load_run(evaluated_runs["target"])
    assert run.summary["privleak_reference_auc"] is not None and target.summary["privleak_reference_auc"] is None
    comparison = compare_with_baseline([target, run], target.name)
    difference = comparison.results[run.name]["privleak"]["difference"]
    assert difference == pytest.approx(run.summary["privleak"] - target.summary["privleak"])
    assert math.isfinite(difference)


def test_intervals_from_another_folder_give_the_same_interval(evaluated_runs, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    shutil.copytree(evaluated_runs["run"] / "eval", folder)
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert Path(saved["retain_eval"]).is_absolute()  # typed relative, saved absolute
    before = json.loads((folder / "summary.json").read_text())["intervals"]["values"]["privleak"]
    monkeypatch.chdir(tmp_path)
    assert main(["intervals", str(folder), "samples=200"]) == 0
    assert json.loads((folder / "summary.json").read_text())["intervals"]["values"]["privleak"] == before


def test_an_unrecomputable_retain_reference_is_an_error_not_a_silent_half(evaluated_runs, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(evaluated_runs["run"] / "eval", folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["retain_eval"] = str(tmp_path / "gone")
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    code = main(["intervals", str(folder), "samples=100"])
    one_line(code, capsys.readouterr().err, "privleak is against a retain model's AUC", "cannot be recomputed")


# ---- attacks read the run's own model and own paths ---------------------------------------------------------

@pytest.mark.parametrize("saved_model", ["moved-away", "relative", "another-model"])
def test_attack_scores_the_runs_own_model(saved_model, evaluated_runs, tiny_model, tmp_path):
    from unlearnlm.config import AttackConfig
    from unlearnlm.scenarios.attacks import plan_attacks

    run = tmp_path / "moved"
    shutil.copytree(evaluated_runs["run"], run)
    config = yaml.safe_load((run / "eval" / "config.yaml").read_text())
    config["model"]["name_or_path"] = {"moved-away": str(tmp_path / "old" / "run" / "model"), "relative": "run/model",
                                       "another-model": str(tiny_model)}[saved_model]
    (run / "eval" / "config.yaml").write_text(yaml.safe_dump(config))
    plan = plan_attacks(AttackConfig(attacks=["quantize"]), run)
    assert plan.eval_config.model.name_or_path == str(run.resolve() / "model")


def test_a_custom_scenarios_relearning_attack_runs(evaluated_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(evaluated_runs["run"], run)
    code = main(["attack", str(run), "attacks=relearn", "relearn.steps=1", "relearn.per_device_batch_size=2",
                 "relearn.gradient_accumulation_steps=1", "progress=false"])
    assert code == 0, capsys.readouterr().err
    (attack,) = json.loads((run / "attacks" / "summary.json").read_text())["attacks"]
    assert attack["attack"] == "relearn:forget_half" and attack["rows"] == 2  # the held-out half of 4 rows


def test_a_probe_template_with_a_format_spec_is_refused_before_any_evaluation(evaluated_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(evaluated_runs["run"], run)
    (tmp_path / "probes.yaml").write_text('asked:\n  template: "Tell me: {question:d}"\n')
    code = main(["attack", str(run), "attacks=probes", f"probes.templates={tmp_path / 'probes.yaml'}"])
    one_line(code, capsys.readouterr().err, "{question:d}", "format spec")
    assert not (run / "attacks").exists()


def test_a_corrupt_previous_attack_summary_is_said_not_dropped_silently(evaluated_runs, tmp_path, caplog):
    import logging

    from unlearnlm.scenarios.attacks import _previous_summary

    (tmp_path / "summary.json").write_text('{"attacks": [{"attack": "relearn:forget_half"')
    with caplog.at_level(logging.WARNING):
        assert _previous_summary(tmp_path) == {}
    assert "corrupt or truncated" in caplog.text and "not kept" in caplog.text


# ---- texts that tokenise to nothing -----------------------------------------------------------------------

@pytest.mark.parametrize("texts", [[""], ["", "   "], ["\n\n"]])
def test_a_blank_forget_corpus_is_refused(texts, tiny_model, tmp_path, capsys):
    (tmp_path / "forget.json").write_text(json.dumps([{"text": t} for t in texts]))
    code = main(["unlearn", f"model.name_or_path={tiny_model}", "data.format=text", "data.task_id=[]",
                 f"data.forget={tmp_path / 'forget.json'}", "method=GA", f"output_dir={tmp_path / 'out'}"])
    one_line(code, capsys.readouterr().err, "forget.json", "blank", "tokenises to nothing")
    assert not (tmp_path / "out").exists()


def test_an_empty_muse_prompt_is_refused(tmp_path, capsys):
    folder = tmp_path / "muse"
    (folder / "verbmem").mkdir(parents=True)
    (folder / "verbmem" / "forget.json").write_text(json.dumps([{"prompt": "Alice was", "gt": "born"},
                                                                {"prompt": " ", "gt": "x"}]))
    code = main(["muse", "unlearn.model.name_or_path=/nonexistent/m", f"evaluation.source={folder}",
                 "evaluation.metrics=verbmem_f", "train=false", f"output_dir={tmp_path / 'out'}"])
    one_line(code, capsys.readouterr().err, "verbmem", "row 2", "'prompt' is empty")


def test_chunking_nothing_is_one_line(tiny_model):
    from transformers import AutoTokenizer

    from unlearnlm.data.text import chunk_token_stream
    from unlearnlm.errors import UserError

    with pytest.raises(UserError, match="tokenise to nothing"):
        chunk_token_stream(["", ""], AutoTokenizer.from_pretrained(tiny_model), 8)
