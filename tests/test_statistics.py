"""Bootstrap intervals and paired comparisons from per-row records (no model in the loop)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binom

from unlearnlm.cli import main
from unlearnlm.errors import UserError
from unlearnlm.evaluation import evaluate as E
from unlearnlm.evaluation import metrics as M
from unlearnlm.evaluation import runs
from unlearnlm.evaluation import statistics as S

PER_ROW = ("rouge_recall", "probability", "token_entropy", "cosine")


def _rows(rng, n, constant=None, prefix="q"):
    """Rows carrying every per-row value; ``constant``: every row the same."""
    rows = []
    for i in range(n):
        value = constant if constant is not None else rng.uniform(0.05, 1.0)
        rows.append({"question": f"{prefix}{i}", **{k: (value if constant is not None else rng.uniform(0.05, 1.0))
                                                     for k in PER_ROW},
                     "truth_ratio": value * 2, "entailed": bool(constant is not None or rng.random() > 0.5)})
    return rows


def _tofu_sets(seed=0, constant_sets=(), n=12):
    rng = np.random.default_rng(seed)
    layout = [("forget", "forget"), ("retain", "retain"), ("real_authors", "utility"), ("world_facts", "utility")]
    return [S.SetRows(name, role, _rows(rng, n, constant=0.6 if name in constant_sets else None))
            for name, role in layout]


SCORING = E.scoring("tofu")


def _mean_scoring():
    """A set's metric = the mean of its rows' x; the aggregate = the mean over sets."""
    def set_metrics(rows, forget_form):
        return {"x": float(np.mean([r["x"] for r in rows]))}

    def aggregates(results):
        return {"mean": float(np.mean([r["metrics"]["x"] for r in results.values()]))}

    return S.Scoring(set_metrics, aggregates)


def test_interval_covers_the_mean_at_about_the_stated_rate():
    """200 samples of 40 rows from Uniform(0, 1) (mean 0.5): the 95% interval covers 0.5 about
    95% of the time. Tolerance: the central 99.8% of Binomial(200, 0.95), widened by the percentile
    bootstrap's known small-sample under-coverage (about 1 point at 40 rows)."""
    repetitions, level = 200, 0.95
    covered = 0
    for repetition in range(repetitions):
        rng = np.random.default_rng(10_000 + repetition)
        rows = [{"x": float(x)} for x in rng.uniform(0, 1, size=40)]
        replicates = S.bootstrap([S.SetRows("s", "retain", rows)], _mean_scoring(), samples=400, seed=repetition)
        low, high = S.intervals(replicates, level)["s/x"]
        covered += low <= 0.5 <= high
    low_count, high_count = binom.interval(0.998, repetitions, level)
    assert low_count - 0.01 * repetitions <= covered <= high_count, covered


def test_same_seed_same_interval_other_seed_other_interval():
    sets = _tofu_sets()
    first = S.intervals(S.bootstrap(sets, SCORING, samples=200, seed=7))
    again = S.intervals(S.bootstrap(sets, SCORING, samples=200, seed=7))
    other = S.intervals(S.bootstrap(sets, SCORING, samples=200, seed=8))
    assert first == again
    assert first["MU"] != other["MU"]


def test_the_replicates_are_the_metrics_of_the_resampled_rows_computed_by_hand():
    """Replicate b of MU is the harmonic mean of the 18 set metrics on rows index_matrix[b]."""
    sets = _tofu_sets()
    samples = 50
    replicates = S.bootstrap(sets, SCORING, samples=samples, seed=3)
    for b in (0, 17, 49):
        values = []
        fe_values = []
        for s in sets:
            picked = [s.rows[i] for i in S.index_matrix(3, s.name, len(s.rows), samples)[b]]
            r = np.array([p["truth_ratio"] for p in picked])
            if s.role == "forget":
                truth = 1 - np.mean(np.minimum(r, 1 / r))
            else:
                truth = np.mean(np.maximum(0, 1 - 1 / r))
            means = {k: np.mean([p[k] for p in picked]) for k in PER_ROW}
            entail = np.mean([float(p["entailed"]) for p in picked])
            six = [means["rouge_recall"], means["probability"], truth, means["token_entropy"], means["cosine"], entail]
            if s.role == "forget":
                fe_values = [six[0], six[1], six[2], six[4], six[5]]
            else:
                values += six
        assert replicates.values["MU"][b] == pytest.approx(len(values) / sum(1 / v for v in values))
        assert replicates.values["FE"][b] == pytest.approx(1 - np.mean(fe_values))


def test_mu_resamples_every_set_and_a_constant_set_adds_no_width():
    constant = ("forget", "retain", "real_authors", "world_facts")
    all_constant = S.intervals(S.bootstrap(_tofu_sets(constant_sets=constant), SCORING, samples=300))
    assert all_constant["MU"][0] == pytest.approx(all_constant["MU"][1])  # nothing varies: no width
    width = {}
    for varying in ("retain", "real_authors", "world_facts"):
        sets = _tofu_sets(constant_sets=[c for c in constant if c != varying])
        interval = S.intervals(S.bootstrap(sets, SCORING, samples=300))
        width[varying] = interval["MU"][1] - interval["MU"][0]
        assert width[varying] > 0.01, varying  # each set alone moves MU
    # The forget set does not enter MU: varying only it leaves MU's interval without width.
    forget_only = S.intervals(S.bootstrap(_tofu_sets(constant_sets=constant[1:]), SCORING, samples=300))
    assert forget_only["MU"][1] - forget_only["MU"][0] == pytest.approx(0, abs=1e-12)
    assert forget_only["FE"][1] - forget_only["FE"][0] > 0.01
    # Changing one set's rows changes MU's interval.
    sets = _tofu_sets()
    before = S.intervals(S.bootstrap(sets, SCORING, samples=300))["MU"]
    sets[3] = S.SetRows("world_facts", "utility", _rows(np.random.default_rng(99), 12))
    assert S.intervals(S.bootstrap(sets, SCORING, samples=300))["MU"] != before


def test_paired_difference_with_itself_is_exactly_zero_and_never_distinguishable():
    sets = _tofu_sets()
    replicates = S.bootstrap(sets, SCORING, samples=200)
    # the same model evaluated again, rows in another order: matched by question
    shuffled = [S.SetRows(s.name, s.role, list(reversed(s.rows))) for s in sets]
    again = S.bootstrap(S.align_rows(shuffled, sets), SCORING, samples=200)
    for other in (replicates, again):
        comparison = S.paired_difference(other, replicates)
        assert comparison and set(comparison) == {k for k, v in replicates.point.items() if v is not None}
        for key, result in comparison.items():
            assert result["difference"] == 0.0 and result["interval"] == [0.0, 0.0], key
            assert result["distinguishable"] is False


def test_paired_difference_tells_a_clear_change_from_noise():
    sets = _tofu_sets()
    worse = [S.SetRows(s.name, s.role, [{**r, "probability": r["probability"] * 0.5} for r in s.rows]) for s in sets]
    noisy = [S.SetRows(s.name, s.role, [{**r, "token_entropy": r["token_entropy"] * (1 + 0.01 * (-1) ** i)}
                                        for i, r in enumerate(s.rows)]) for s in sets]
    base = S.bootstrap(sets, SCORING, samples=300)
    clear = S.paired_difference(S.bootstrap(worse, SCORING, samples=300), base)
    assert clear["MU"]["difference"] < 0 and clear["MU"]["distinguishable"]
    assert clear["MU"]["interval"][1] < 0
    assert not clear["forget/rouge"]["distinguishable"]  # unchanged: exactly 0
    tiny = S.paired_difference(S.bootstrap(noisy, SCORING, samples=300), base)
    assert not tiny["forget/token_entropy"]["distinguishable"]


def test_paired_comparison_refuses_other_rows():
    sets = _tofu_sets()
    other = _tofu_sets()
    other[0] = S.SetRows("forget", "forget", _rows(np.random.default_rng(1), 12, prefix="other"))
    with pytest.raises(UserError, match="set 'forget' holds other rows"):
        S.align_rows(other, sets)
    with pytest.raises(UserError, match="lacks"):
        S.align_rows(sets[1:], sets)
    with pytest.raises(UserError, match="resampled different rows"):
        S.paired_difference(S.bootstrap(sets, SCORING, samples=10), S.bootstrap(sets, SCORING, samples=20))


def test_pooled_over_seeds_averages_replicates_on_the_same_questions():
    a, b = _tofu_sets(seed=1), _tofu_sets(seed=2)
    ra, rb = S.bootstrap(a, SCORING, samples=100), S.bootstrap(b, SCORING, samples=100)
    pooled = S.pooled_over_seeds([ra, rb])
    assert pooled.point["MU"] == pytest.approx((ra.point["MU"] + rb.point["MU"]) / 2)
    assert np.allclose(pooled.values["FE"], (ra.values["FE"] + rb.values["FE"]) / 2)
    spread = S.seed_spread([{"MU": 0.4, "FE": 0.5}, {"MU": 0.6, "FE": 0.5}])
    assert spread["MU"] == {"mean": pytest.approx(0.5), "sd": pytest.approx(np.std([0.4, 0.6], ddof=1)), "n": 2}
    assert spread["FE"]["sd"] == 0.0


def _evaluation_folder(tmp_path, sets, name="eval"):
    folder = tmp_path / name
    (folder / "records").mkdir(parents=True)
    results = {}
    for s in sets:
        (folder / "records" / f"{s.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in s.rows))
        results[s.name] = {"role": s.role, "rows": len(s.rows), "metrics": M.set_metrics(s.rows, s.forget_form)}
    summary = {"model": "m", "scenario": "tofu", "judges": {"embedder": "e", "nli": "n"}, "sets": results,
               "skipped": [], "FQ": 0.5}
    for key, value in E.aggregates(results, "tofu").items():
        summary[key], summary[f"{key}_n_values"] = value["value"], value["n_values"]
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_intervals_command_adds_intervals_to_an_evaluation_folder(tmp_path, capsys):
    sets = _tofu_sets()
    folder = _evaluation_folder(tmp_path, sets)
    assert main(["intervals", str(folder), "samples=200", "seed=4"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((folder / "summary.json").read_text())
    block = summary["intervals"]
    assert block["samples"] == 200 and block["seed"] == 4 and block["rows"]["forget"] == 12
    expected = S.intervals(S.bootstrap(sets, SCORING, samples=200, seed=4))
    assert block["values"]["MU"] == pytest.approx(expected["MU"])
    low, high = block["values"]["MU"]
    assert low < high
    assert "no interval" in block["FQ"] and "12 forget rows" in block["FQ"]
    assert f"[{low:.4f}, {high:.4f}]" in printed and "(no interval: a p-value)" in printed
    assert max(len(line) for line in printed.splitlines()[:12]) <= 100
    row = runs.flat_numbers(summary)
    assert row["MU_low"] == low and row["forget/rouge_high"] == block["values"]["forget/rouge"][1]
    for bad in (["intervals", str(folder), "samples=0"], ["intervals", str(tmp_path / "missing")]):
        assert main(bad) == 2
        assert "\n" not in capsys.readouterr().err.strip()


def test_demo_sized_bootstrap_takes_seconds():
    """8 models x (10 + 10 + 20 + 20 rows), B = 1000, through the evaluation's own scoring."""
    import time

    started = time.perf_counter()
    for model in range(8):
        rng = np.random.default_rng(model)
        sets = [S.SetRows(n, r, _rows(rng, k)) for n, r, k in
                [("forget", "forget", 10), ("retain", "retain", 10), ("real_authors", "utility", 20),
                 ("world_facts", "utility", 20)]]
        S.bootstrap(sets, SCORING, samples=1000)
    assert time.perf_counter() - started < 60  # measured: about 5 s on one busy core


def test_intervals_print_with_the_decimals_their_width_needs():
    assert S.format_with_interval(0.41966, [0.3912, 0.4521]) == "0.4197 [0.39, 0.45]"
    assert S.format_interval([-0.00012, 0.00003], signed=True) == "[-0.0001, +0.0000]"
    assert S.format_interval([0.001, 0.007], signed=True) == "[+0.001, +0.007]"
    assert S.format_with_interval(None, [0.1, 0.2]) == "-" and S.format_with_interval(0.5, None) == "0.5000"


def test_short_interval_drops_only_a_leading_zero():
    assert S.short_interval([0.39, 0.451]) == "[.39,.45]"
    assert S.short_interval([10.07, 12.0]) == "[10.07,12.00]"  # was "[1.07,12.00]"
    assert S.short_interval([-0.45, -0.001]) == "[-.45,.00]"  # no "-.00"
    assert S.short_interval(None) == ""
