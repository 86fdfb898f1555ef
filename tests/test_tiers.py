"""The suite in two tiers: the README's test command is .ci/run's, the e2e marker is given by
what a test does, and a tier that selects nothing does not fail the chain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _test_command(text: str) -> str:
    return next(line for line in text.splitlines() if "python -m pytest" in line and line.startswith("pip install"))


def test_readme_runs_what_ci_runs():
    ci = _test_command((REPO / ".ci" / "run").read_text(encoding="utf-8"))
    readme = _test_command((REPO / "README.md").read_text(encoding="utf-8"))
    assert readme == ci
    # the fast tier first, then the rest: together the whole suite
    assert ci.endswith('python -m pytest -q -m "not e2e" && python -m pytest -q -m e2e')


def _collected(*args: str) -> set[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    return {line.split("::")[1].split("[")[0] for line in result.stdout.splitlines() if "::" in line}


def test_the_marker_follows_what_a_test_does():
    files = ["tests/test_api.py", "tests/test_offline_nli.py"]
    slow, fast = _collected("-m", "e2e", *files), _collected("-m", "not e2e", *files)
    # a model fixture, a model trained in the test body
    assert {"test_finetune_unlearn_evaluate", "test_tiny_training_caches_and_predicts"} <= slow
    assert {"test_config_objects_and_overrides_combine", "test_world_pairs_are_balanced_and_deterministic"} <= fast
    assert not slow & fast


def test_a_tier_without_tests_passes():
    # test_layers.py holds no end-to-end test: pytest's status 5 (nothing collected) becomes 0.
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "e2e", "tests/test_layers.py"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "deselected" in result.stdout
    # a real failure to collect is not hidden
    missing = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/no_such_file.py"],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
    assert missing.returncode != 0
