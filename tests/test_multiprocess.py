"""Evaluation on several CPU processes under torchrun (gloo), the FSDP and ZeRO-3 configs.

Two processes write the records and summary one process writes: each process generates and
scores a share of each set's rows (row i of the sets, counted across sets, to process i mod N),
the main process joins them in row order and alone judges, scores and writes
(evaluation/shards.py). Each torchrun launch costs seconds: one launch per case.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import qa_rows, write_jsonl
from test_ddp import COMMON, read_log

from unlearnlm.cli import main

needs_torchrun = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
CONFIGS = Path(__file__).resolve().parents[1] / "src" / "unlearnlm" / "accelerate_configs"
# Keys that say when, where and how it ran, not what it found.
RUN_KEYS = ("output_dir", "times", "evaluated_at", "evaluated_by")


def torchrun(processes: int, port: int, *arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["torchrun", "--nproc_per_node", str(processes), "--master_port", str(port), "-m",
                           "unlearnlm", *arguments], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory):
    """forget5 (5 rows: the last shard uneven), retain7 (7 rows) and a holdout of 1 row (fewer
    rows than processes); one1 and two1: one row each."""
    folder = tmp_path_factory.mktemp("eval_files")
    rows = qa_rows()
    return {"forget5": write_jsonl(folder / "forget5.jsonl", rows[:5]),
            "retain7": write_jsonl(folder / "retain7.jsonl", rows[12:19]),
            "holdout1": write_jsonl(folder / "holdout1.jsonl", rows[19:20]),
            "one1": write_jsonl(folder / "one1.jsonl", rows[5:6]),
            "two1": write_jsonl(folder / "two1.jsonl", rows[6:7])}


def evaluate_arguments(model, forget, retain, holdout=None) -> list[str]:
    return [f"model.name_or_path={model}", "scenario=custom", f"data.custom_forget={forget}",
            f"data.custom_retain={retain}", *([f"data.holdout={holdout}"] if holdout else []),
            "judges.embedder=none", "judges.nli=none", "max_length=32", "generation_batch_size=3",
            "loss_batch_size=5", "bootstrap.samples=100"]


def epoch_evaluation(model, eval_files) -> list[str]:
    """An unlearning run's settings for evaluate_arguments' evaluation at every epoch."""
    arguments = evaluate_arguments(model, eval_files["forget5"], eval_files["retain7"], eval_files["holdout1"])
    return ["eval_every_epoch=true", *[f"evaluation.{a}" for a in arguments[1:]]]


def assert_same_values(one, two, path=""):
    """Equal strings, token ids and structure; numbers equal to 1e-6."""
    if isinstance(one, float) or isinstance(two, float):
        assert one is not None and two is not None, path
        assert math.isnan(one) == math.isnan(two) and (math.isnan(one) or two == pytest.approx(one, abs=1e-6)), path
    elif isinstance(one, dict):
        assert one.keys() == two.keys(), path
        for key in one:
            assert_same_values(one[key], two[key], f"{path}/{key}")
    elif isinstance(one, list):
        assert len(one) == len(two), path
        for k, (a, b) in enumerate(zip(one, two)):
            assert_same_values(a, b, f"{path}[{k}]")
    else:
        assert one == two, path


def records(folder: Path) -> dict[str, list[dict]]:
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((folder / "records").iterdir())}


def assert_same_evaluation(one: Path, two: Path) -> dict:
    """Same record files, rows equal; same summary apart from RUN_KEYS. Returns the second's summary."""
    assert_same_values(records(one), records(two))
    first, second = (json.loads((f / "summary.json").read_text()) for f in (one, two))
    assert_same_values({k: v for k, v in first.items() if k not in RUN_KEYS},
                       {k: v for k, v in second.items() if k not in RUN_KEYS})
    return second


# Judges that need no model: a letter-count embedding and "entailment" when every word of the
# hypothesis is in the premise; each process loads them and judges its own shard.
FAKE_JUDGES = """
import numpy as np
import unlearnlm.judges.loading as loading

class LetterEmbedder:
    name = "letter-counts"
    def encode(self, texts, batch_size=64):
        return np.array([[t.lower().count(c) + 1.0 for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts])

class WordsNLI:
    name = "word-subset"
    def predict(self, premises, hypotheses, batch_size=32):
        return ["entailment" if set(h.lower().split()) <= set(p.lower().split()) else "neutral"
                for p, h in zip(premises, hypotheses)]

loading.Judges.load = classmethod(lambda cls, config: cls(LetterEmbedder(), WordsNLI()))
"""


@needs_torchrun
def test_two_processes_evaluate_as_one(tiny_model, eval_files, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(FAKE_JUDGES)
    env = {"PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])}
    arguments = [a for a in evaluate_arguments(tiny_model, eval_files["forget5"], eval_files["retain7"],
                                               eval_files["holdout1"]) if not a.startswith("judges.")]
    one = subprocess.run([sys.executable, "-m", "unlearnlm", "evaluate", *arguments, f"output_dir={tmp_path / 'one'}"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(2, 29541, "evaluate", *arguments, f"output_dir={tmp_path / 'two'}", env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    summary = assert_same_evaluation(tmp_path / "one", tmp_path / "two")
    assert summary["judges"] == {"embedder": "letter-counts", "nli": "word-subset"}
    assert all("cosine" in r and "nli_label" in r for r in records(tmp_path / "two")["forget5.jsonl"])
    # Dealt out across the sets: forget5 rows 0, 2, 4 and retain7 rows 1, 3, 5 (row 5 + i of all)
    # and the holdout row (row 12) to process 0; forget5 1, 3 and retain7 0, 2, 4, 6 to process 1.
    assert summary["evaluated_by"] == {"processes": 2, "rows_per_process": [7, 6]}
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["evaluated_by"] == {
        "processes": 1, "rows_per_process": [13]}
    assert [r["index"] for r in records(tmp_path / "two")["retain7.jsonl"]] == list(range(7))


@needs_torchrun
def test_more_processes_than_rows(tiny_model, eval_files, tmp_path):
    """Two rows, three processes: the third has nothing to run and still takes part."""
    arguments = evaluate_arguments(tiny_model, eval_files["one1"], eval_files["two1"])
    assert main(["evaluate", *arguments, f"output_dir={tmp_path / 'one'}"]) == 0
    three = torchrun(3, 29542, "evaluate", *arguments, f"output_dir={tmp_path / 'three'}")
    assert three.returncode == 0, three.stderr[-2000:]
    summary = assert_same_evaluation(tmp_path / "one", tmp_path / "three")
    assert summary["evaluated_by"] == {"processes": 3, "rows_per_process": [1, 1, 0]}


@needs_torchrun
def test_a_process_dying_mid_evaluation_leaves_no_evaluation(tiny_model, eval_files, tmp_path):
    """Process 1 dies in its inference: torchrun reports the failed process and stops the others,
    and the output folder holds no summary or results.csv (records are written only after every
    shard is in, summary.json last)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import unlearnlm.evaluation.inference as inference\n"
        "    inference.infer_sets = lambda *args, **kwargs: os._exit(7)\n")
    arguments = evaluate_arguments(tiny_model, eval_files["forget5"], eval_files["retain7"])
    died = torchrun(2, 29543, "evaluate", *arguments, f"output_dir={tmp_path / 'out'}",
                    env={"PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])})
    assert died.returncode != 0
    assert "ChildFailedError" in died.stderr and "exitcode  : 7" in died.stderr
    out = tmp_path / "out"
    assert not (out / "summary.json").exists() and not (out / "results.csv").exists()
    assert not (out / "records").exists()


@needs_torchrun
def test_per_epoch_evaluation_under_torchrun(tiny_model, qa_folder, eval_files, tmp_path):
    """Both processes evaluate every epoch; the files are those of one process; before any update
    (epoch 0) the records are equal, after it the model differs as DDP's loss curve does. NPO's
    reference is kept (not precomputed): under DDP each process holds a whole copy."""
    base = [f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", *COMMON,
            "training.precompute_reference_nll=false", *epoch_evaluation(tiny_model, eval_files)]
    assert main(["unlearn", *base, "training.per_device_batch_size=4", f"output_dir={tmp_path / 'one'}"]) == 0
    two = torchrun(2, 29544, "unlearn", *base, "training.per_device_batch_size=2", f"output_dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-2000:]
    one_eval, two_eval = tmp_path / "one" / "eval", tmp_path / "two" / "eval"
    files = sorted(str(p.relative_to(one_eval)) for p in one_eval.rglob("*"))
    assert files == sorted(str(p.relative_to(two_eval)) for p in two_eval.rglob("*"))
    assert [f"epoch_{k}/summary.json" in files for k in range(4)] == [True] * 4
    assert_same_evaluation(one_eval / "epoch_0", two_eval / "epoch_0")
    for epoch in range(4):
        summary = json.loads((two_eval / f"epoch_{epoch}" / "summary.json").read_text())
        assert summary["evaluated_by"] == {"processes": 2, "rows_per_process": [7, 6]}
        for name, rows in records(one_eval / f"epoch_{epoch}").items():
            for a, b in zip(rows, records(two_eval / f"epoch_{epoch}")[name], strict=True):
                assert b["truth_loss"] == pytest.approx(a["truth_loss"], rel=2e-3)
    assert len((two_eval / "results.csv").read_text().splitlines()) == 5  # header + epochs 0-3
    trained = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert trained["reference_model"] == "whole on every process"


FSDP2_EVALUATION = """
import sys
from torch.distributed.fsdp import fully_shard
from unlearnlm.config import EvaluateConfig, load_config
from unlearnlm.evaluation.evaluate import evaluate_model
from unlearnlm.evaluation.shards import processes
from unlearnlm.training.models import load_for_inference, load_tokenizer

processes()  # joins the gloo group
config = load_config(EvaluateConfig, None, sys.argv[1:])
model, tokenizer = load_for_inference(config.model, load_tokenizer(config.model))
for block in model.model.layers:
    fully_shard(block)
fully_shard(model)
evaluate_model(config, model=model, tokenizer=tokenizer)
"""


@needs_torchrun
def test_fsdp2_sharded_model_evaluates_as_one_process(tiny_model, eval_files, tmp_path):
    """A model split over two CPU processes by FSDP2's fully_shard (each holds half of every
    parameter; every forward gathers them) evaluates to one process's records: both processes
    run every row (a sharded model's forwards are collective), the main one writes."""
    arguments = evaluate_arguments(tiny_model, eval_files["forget5"], eval_files["retain7"], eval_files["holdout1"])
    assert main(["evaluate", *arguments, f"output_dir={tmp_path / 'one'}"]) == 0
    (tmp_path / "shard.py").write_text(FSDP2_EVALUATION)
    done = subprocess.run(["torchrun", "--nproc_per_node", "2", "--master_port", "29548", str(tmp_path / "shard.py"),
                           *arguments, f"output_dir={tmp_path / 'fsdp2'}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = assert_same_evaluation(tmp_path / "one", tmp_path / "fsdp2")
    assert summary["evaluated_by"] == {"processes": 2, "rows_per_process": [13, 13], "rows_split": False}


def fsdp_launch_env() -> dict[str, str]:
    """The environment accelerate launch gives each process for the shipped fsdp.yaml (accelerate's
    own conversion), in float32 (the one-process run's precision) and on the CPU without a GPU."""
    import torch
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    parsed = launch_command_parser().parse_args(["--config_file", str(CONFIGS / "fsdp.yaml"), "x.py"])
    env = prepare_multi_gpu_env(_validate_launch_command(parsed)[0])
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v and k.startswith(("ACCELERATE_", "FSDP_"))}
    changed["ACCELERATE_MIXED_PRECISION"] = "no"
    if not torch.cuda.is_available():
        changed["ACCELERATE_USE_CPU"] = "true"
    return changed


def test_shipped_fsdp_config_is_fsdp2_full_shard():
    env = fsdp_launch_env()
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP" and env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"


@needs_torchrun
def test_fsdp_two_processes_follow_one_process(tiny_model, qa_folder, eval_files, tmp_path):
    """FSDP2 on two processes: the loss curve of one process with the doubled batch (the DDP
    test's tolerance), the model saved whole, evaluating to the one-process model's numbers,
    and the per-epoch evaluation run on the sharded model by both processes."""
    env = fsdp_launch_env()
    probe = subprocess.run(
        ["torchrun", "--nproc_per_node", "2", "--master_port", "29545", "--no-python", sys.executable,
         "-c", "from accelerate import Accelerator; print(Accelerator().distributed_type)"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert probe.returncode == 0, probe.stderr[-2000:]
    if "FSDP" not in probe.stdout:
        import accelerate

        pytest.skip(f"accelerate {accelerate.__version__} turns the FSDP config into DistributedType.FSDP only for "
                    "GPU-like devices (MULTI_GPU/NPU/XPU/...); on CPU processes (gloo: "
                    f"{probe.stdout.split()[0]}) it would be plain DDP (unlearnlm refuses it), so FSDP training "
                    "cannot run without a GPU")
    base = [f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", *COMMON,
            "training.precompute_reference_nll=false",  # NPO's reference kept: sharded as the policy
            *epoch_evaluation(tiny_model, eval_files)]
    assert main(["unlearn", *base, "training.per_device_batch_size=4", f"output_dir={tmp_path / 'one'}"]) == 0
    fsdp = torchrun(2, 29546, "unlearn", *base, "training.per_device_batch_size=2", f"output_dir={tmp_path / 'fsdp'}",
                    env=env)
    assert fsdp.returncode == 0, fsdp.stderr[-2000:]
    trained = json.loads((tmp_path / "fsdp" / "train_summary.json").read_text())
    assert trained["reference_model"] == "sharded over the processes (FSDP)"
    epoch_0 = tmp_path / "fsdp" / "eval" / "epoch_0"
    assert json.loads((epoch_0 / "summary.json").read_text())["evaluated_by"]["rows_split"] is False
    assert_same_evaluation(tmp_path / "one" / "eval" / "epoch_0", epoch_0)
    for one, two in zip(read_log(tmp_path / "one"), read_log(tmp_path / "fsdp"), strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=2e-3)
    scores = {}
    for name in ("one", "fsdp"):
        assert main(["evaluate", str(tmp_path / name), "judges.embedder=none", "judges.nli=none", "max_length=24",
                     "bootstrap.samples=0"]) == 0
        scores[name] = json.loads((tmp_path / name / "eval" / "summary.json").read_text())
    for set_name, result in scores["one"]["sets"].items():
        for metric, value in result["metrics"].items():
            if isinstance(value, float):
                assert scores["fsdp"]["sets"][set_name]["metrics"][metric] == pytest.approx(value, rel=2e-3, abs=1e-6)


@needs_torchrun
def test_fsdp_config_on_cpu_processes_is_refused(tiny_model, qa_folder, tmp_path):
    """Without a GPU accelerate would train the FSDP config as plain DDP: refused, on every process."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU runs FSDP: test_fsdp_two_processes_follow_one_process covers it")
    done = torchrun(2, 29549, "unlearn", f"model.name_or_path={tiny_model}", f"data.source={qa_folder}", *COMMON,
                    "training.per_device_batch_size=2", f"output_dir={tmp_path / 'fsdp'}", env=fsdp_launch_env())
    assert done.returncode != 0
    assert done.stderr.count("unlearnlm: error: the launch asks for FSDP (ACCELERATE_USE_FSDP=true)") == 2
    assert not (tmp_path / "fsdp" / "model").exists()


def test_shipped_zero3_config():
    """The ZeRO-3 config as accelerate reads it: stage 3 with parameters partitioned at load time
    and a whole 16-bit model saved; the reference model follows it (trainer._prepare_reference
    keeps stage 3 for an inference-only engine)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml"))
    assert config.distributed_type == "DEEPSPEED"
    assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_init_flag"] is True
    assert config.deepspeed_config["zero3_save_16bit_model"] is True
    assert yaml.safe_load((CONFIGS / "deepspeed_zero3.yaml").read_text())["num_processes"] >= 2


@needs_torchrun
def test_zero3_two_processes_follow_one_process(tiny_model, qa_folder, tmp_path):
    """ZeRO-3 (the shipped config, float32) with KL as regulariser: the frozen reference stays
    for every step and is partitioned as the policy; the loss curve is the one-process curve."""
    import importlib.util

    import torch

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install deepspeed)")
    if torch.cuda.device_count() < 2:
        pytest.skip(f"ZeRO-3 needs two GPUs (DeepSpeed has no CPU gloo mode here); {torch.cuda.device_count()} found")
    base = [f"model.name_or_path={tiny_model}", f"data.source={qa_folder}",
            *[c for c in COMMON if not c.startswith("method=")], "method=GA+KL"]
    assert main(["unlearn", *base, "training.per_device_batch_size=4", f"output_dir={tmp_path / 'one'}"]) == 0
    done = subprocess.run(["accelerate", "launch", "--config_file", str(CONFIGS / "deepspeed_zero3.yaml"),
                           "--mixed_precision", "no", "--main_process_port", "29547", "-m", "unlearnlm", "unlearn",
                           *base, "training.per_device_batch_size=2", f"output_dir={tmp_path / 'zero3'}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trained = json.loads((tmp_path / "zero3" / "train_summary.json").read_text())
    assert trained["reference_model"] == "partitioned over the processes (ZeRO-3)"
    for one, two in zip(read_log(tmp_path / "one"), read_log(tmp_path / "zero3"), strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=2e-3)


# What the GPU machine may lack; transformers' own availability checks see None as "not installed".
ABSENT = ("datasets", "rouge_score", "lm_eval", "gguf", "deepspeed", "sentence_transformers", "peft", "scipy",
          "matplotlib", "optuna", "sklearn")


def test_gpu_check_runs_on_the_cpu_without_optional_packages(tmp_path):
    """benchmarks/gpu_check.sh --cpu-smoke: every step of the GPU check on a tiny model, with the
    packages a bare GPU machine may lack made unimportable."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(f"import sys\nfor name in {ABSENT!r}:\n    sys.modules[name] = None\n")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--output",
                           str(tmp_path / "check.json")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(repo / "src")])})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "check.json").read_text())
    assert result["optional_packages_loaded"] == []
    assert result["versions"]["torch"] and result["versions"]["transformers"]
    assert [r["method"] for r in result["unlearning"]] == ["NPO+GD", "ME+GD"]
    for run in result["unlearning"]:
        assert run["real_tokens"] > 0 and run["tokens_per_s_vs_trainer"] == pytest.approx(
            run["tokens_per_s"] / result["plain_trainer"]["tokens_per_s"], rel=1e-2)
    # A random model never ends an answer: every row generates up to max_length (200) in all.
    assert result["evaluation"]["rows"] == 6 and result["evaluation"]["generated_tokens"] > 6 * 100


def test_rows_are_dealt_once_each_and_evenly():
    """Across sets of any sizes, every row goes to exactly one process, row i of all the sets
    together to process i mod N, so no two processes' totals differ by more than one."""
    from unlearnlm.evaluation.shards import Processes, first_row, shard

    for count in (1, 2, 3, 5):
        for sizes in ([5, 7, 1], [1], [0, 2], [4, 4, 4], [3, 0, 1, 6]):
            taken = {rank: [] for rank in range(count)}
            dealt = 0
            for k, size in enumerate(sizes):
                rows = [(k, i) for i in range(size)]
                for rank in range(count):
                    mine = shard(rows, Processes(rank, count), dealt)
                    assert mine == [(k, i) for i in range(size) if (dealt + i) % count == rank]
                    # where the main process puts this process's j-th record back
                    start = first_row(Processes(rank, count), dealt)
                    assert [start + j * count for j in range(len(mine))] == [i for _, i in mine]
                    taken[rank] += mine
                dealt += size
            everything = sorted(row for rows in taken.values() for row in rows)
            assert everything == sorted((k, i) for k, size in enumerate(sizes) for i in range(size))
            totals = [len(rows) for rows in taken.values()]
            assert max(totals) - min(totals) <= 1
