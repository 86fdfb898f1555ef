"""A toy scenario (tests/toy_scenario.py: one module and one registry entry) runs from the command
line and from the API; the attack's counterpart is in test_attacks.py (it needs an unlearned run)."""

from __future__ import annotations

import json

import pytest
import toy_scenario
from conftest import write_jsonl

import unlearnlm
from unlearnlm.cli import main
from unlearnlm.errors import UserError
from unlearnlm.scenarios import registry


@pytest.fixture()
def registered(monkeypatch):
    monkeypatch.setitem(registry.SCENARIOS, "count-words", toy_scenario.SCENARIO)


def test_a_toy_scenario_from_the_command_line_and_the_api(registered, tmp_path, capsys):
    rows = write_jsonl(tmp_path / "rows.json", [{"question": "q?", "answer": "one"},
                                                {"question": "q?", "answer": "one two three"}])
    assert main(["count-words", f"rows={rows}", "at_least=2", f"output_dir={tmp_path / 'cli'}"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 answers have at least 2 words" in out and f"count-words run written to {tmp_path / 'cli'}" in out
    assert json.loads((tmp_path / "cli" / "summary.json").read_text()) == {"rows": 2, "counted": 1}

    result = unlearnlm.scenario("count-words", rows=str(rows), at_least=3, output_dir=tmp_path / "api")
    assert result.folder == tmp_path / "api" and result.numbers == {"rows": 2, "counted": 1}
    assert result.text == "1 of 2 answers have at least 3 words"
    # its settings are checked at the boundary, as every command's, in one line
    assert main(["count-words", "at_least=-1"]) == 2
    assert capsys.readouterr().err.strip() == "unlearnlm: error: at_least must be zero or more, got -1"
    with pytest.raises(UserError, match="unknown config key 'colour'"):
        unlearnlm.scenario("count-words", colour="red")


def test_an_unknown_scenario_lists_the_registry():
    with pytest.raises(UserError, match="unknown scenario 'nope'; valid: continual, real-world"):
        unlearnlm.scenario("nope")
