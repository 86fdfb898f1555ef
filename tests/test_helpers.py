"""The helpers each concern has one of: length batching, table cells, CSV text, PNG figures, the
run-folder check."""

from __future__ import annotations

import pytest

from unlearnlm.config import TrainingConfig, UnlearnConfig, check_run_folder, config_differences, save_config
from unlearnlm.data.batches import LengthGroupedSampler, length_batches
from unlearnlm.errors import UserError
from unlearnlm.tables import csv_text, format_cell, markdown_table, number_cell


def test_length_batches():
    lengths = [3, 9, 1, 9, 5]
    # Longest first, ties in their given order, batches of two.
    assert length_batches(lengths, 2) == [[1, 3], [4, 0], [2]]
    assert length_batches(lengths, 2, longest_first=False) == [[2, 0], [4, 1], [3]]
    assert length_batches(lengths, 2, sort=False) == [[0, 1], [2, 3], [4]]
    # With weights a batch closes once its weights reach the batch size.
    assert length_batches(lengths, 3, weights=[1, 2, 1, 1, 2]) == [[1, 3], [4, 0], [2]]
    assert length_batches([], 4) == []


def test_length_grouped_sampler_orders_each_step_longest_first():
    import random

    rng = random.Random(7)
    lengths = [rng.randrange(1, 6) for _ in range(23)]  # many ties: the index breaks them
    sampler = LengthGroupedSampler(lambda epoch: lengths, len(lengths), group_size=8, seed=3)
    sampler.set_epoch(2)
    order = list(range(23))
    random.Random("3/order/2").shuffle(order)  # the sampler's own seeded shuffle
    expected = []
    for start in range(0, 23, 8):
        expected += sorted(order[start : start + 8], key=lambda i: (-lengths[i], i))
    assert list(sampler) == expected and sorted(expected) == list(range(23))


def test_table_cells_and_markdown():
    assert [format_cell(v) for v in (None, "", 0.5, 2, True, "ME+GD")] == ["-", "-", "0.5000", "2", "True", "ME+GD"]
    assert [number_cell(v) for v in ("0.25", "", "n/a", None)] == ["0.2500", "-", "n/a", "-"]
    table = markdown_table(["run", "downstream/arc"], [{"run": "a", "downstream/arc": 0.123456}],
                           titles={"downstream/arc": "arc"})
    assert table == "| run | arc |\n|---|---|\n| a | 0.1235 |\n"


def test_csv_text():
    rows = [{"a": 1.5, "b": None}, {"a": "x,y"}]
    assert csv_text(["a", "b"], rows) == 'a,b\r\n1.5,\r\n"x,y",\r\n'  # None and a missing key: empty
    with pytest.raises(ValueError, match="not in fieldnames"):
        csv_text(["a"], rows)  # a key that is no column is not dropped silently...
    assert csv_text(["a"], rows, ignore_other_keys=True) == 'a\r\n1.5\r\nx,y\r\n'.replace("x,y", '"x,y"')


def test_png_bytes_closes_the_figure():
    from unlearnlm.figures import png_bytes, pyplot

    plt = pyplot()
    figure = plt.figure(figsize=(1, 1))
    data = png_bytes(figure, dpi=20)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and not plt.fignum_exists(figure.number)


def test_run_folder_check(tmp_path):
    config = UnlearnConfig(output_dir=str(tmp_path))
    assert config_differences(tmp_path, config) is None and not check_run_folder(tmp_path, config)
    save_config(config, tmp_path / "config.yaml")
    assert check_run_folder(tmp_path, config)
    # Operational options may change on a rerun; anything else may not.
    quieter = UnlearnConfig(output_dir=str(tmp_path), training=TrainingConfig(progress=False, report_to="all"))
    assert config_differences(tmp_path, quieter) == [] and check_run_folder(tmp_path, quieter)
    other = UnlearnConfig(output_dir=str(tmp_path), beta=0.5)
    assert config_differences(tmp_path, other) == ["beta"]
    with pytest.raises(UserError, match="holds a run with another config \\(differs in: beta\\)"):
        check_run_folder(tmp_path, other)
    (tmp_path / "config.yaml").write_text("- not a mapping\n")
    with pytest.raises(UserError, match="unreadable"):
        check_run_folder(tmp_path, config)
