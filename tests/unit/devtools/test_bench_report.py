"""The bench's arithmetic: scaling exponents, the chain's totals, the memory-fit rule, the README rows."""

from __future__ import annotations

import json

import pytest

from include.devtools import bench_report as report


def _stage(rows: int, seconds: float, wall: float, peak: float, floor: float | None = 1.0) -> dict:
    return {
        "rows": rows,
        "seconds": seconds,
        "wall_seconds": wall,
        "rows_per_second": rows / seconds,
        "peak_rss_mib": peak,
        "floor_seconds": floor,
        "ratio_to_floor": None if floor is None else seconds / floor,
    }


def _size(rows: int, factor: float = 1.0) -> dict:
    stages = {
        "simulate": _stage(rows, 2.07 * factor, 3.0 * factor, 377, 0.37),
        "ingest": _stage(rows, 2.6 * factor, 8.19 * factor, 672, 0.92),
        "features": _stage(rows, 4.36 * factor, 5.17 * factor, 960, 0.19),
        "materialize": {**_stage(149_534, 97.8 * factor, 100.9 * factor, 860, 2.9), "rows": 149_534},
        "training": {**_stage(1_833_250, 42.0, 50.4, 3482, 2.78), "days": 3},
        "scoring": _stage(rows, 23.2 * factor, 29.5 * factor, 4096, 1.77),
        "drift": {**_stage(rows, 4.75, 16.3, 844, 0.18), "sampled_rows": 50_000},
    }
    return {**stages, "chain": report.chain_totals(stages)}


def test_the_exponent_is_the_slope_of_a_power_law() -> None:
    points = [(n, 3.0 * n**0.8) for n in (1e5, 1e6, 1e7)]
    assert report.exponent(points) == pytest.approx(0.8)


def test_the_exponent_fits_noisy_points_by_least_squares() -> None:
    # log10 rows 5, 6, 7 against log10 seconds 0, 1.1, 1.9: the slope of the best line is 0.95.
    points = [(1e5, 1.0), (1e6, 10**1.1), (1e7, 10**1.9)]
    assert report.exponent(points) == pytest.approx(0.95)


def test_no_exponent_without_two_distinct_sizes() -> None:
    assert report.exponent([(1e6, 4.0)]) is None
    assert report.exponent([(1e6, 4.0), (1e6, 5.0)]) is None
    assert report.exponent([]) is None


def test_scaling_reports_work_and_process_exponents_of_the_stages_that_ran() -> None:
    small, large = _size(100_000), _size(1_000_000, factor=10.0)
    large["features"] = {"skipped": "stopped: memory"}
    exponents = report.scaling({100_000: small, 1_000_000: large})
    assert exponents["work"]["simulate"] == pytest.approx(1.0)
    assert exponents["process"]["scoring"] == pytest.approx(1.0)
    assert "features" not in exponents["work"]
    # Training read the same rows at both sizes: no slope to fit.
    assert "training" not in exponents["work"]


def test_the_chain_sums_its_five_stages_against_their_floors() -> None:
    chain = _size(1_000_000)["chain"]
    assert chain["process_seconds"] == pytest.approx(8.19 + 5.17 + 100.9 + 29.5 + 16.3)
    assert chain["work_seconds"] == pytest.approx(2.6 + 4.36 + 97.8 + 23.2 + 4.75)
    assert chain["floor_seconds"] == pytest.approx(0.92 + 0.19 + 2.9 + 1.77 + 0.18)
    assert chain["ratio_to_floor"] == pytest.approx(160.06 / 5.96)
    assert not chain["within_ratio"]
    assert chain["peak_rss_mib"] == 4096 and chain["peak_stage"] == "scoring"
    assert not chain["within_peak"]
    assert chain["missing"] == []


def test_a_chain_within_its_goals_says_so_and_names_what_did_not_run() -> None:
    stages = {s: _stage(1000, 1.0, 2.0, 500, 0.5) for s in ("ingest", "features", "materialize", "scoring")}
    stages["drift"] = {"skipped": "needs scoring"}
    chain = report.chain_totals(stages)
    assert chain["missing"] == ["drift"]
    assert chain["ratio_to_floor"] == pytest.approx(4.0)
    assert chain["within_ratio"] and chain["within_peak"]


def test_memory_is_carried_linearly_through_the_two_largest_sizes() -> None:
    points = {100_000: 400.0, 1_000_000: 1300.0, 20_000: 300.0}
    assert report.estimate(points, 10_000_000) == pytest.approx(1300 + 0.001 * 9_000_000)
    assert report.estimate({1_000_000: 1000.0}, 10_000_000) == pytest.approx(10_000.0)
    # A step that needed less at the larger size is not expected to shrink further.
    assert report.estimate({100_000: 900.0, 1_000_000: 800.0}, 10_000_000) == pytest.approx(800.0)


def _footprint(peaks: dict[str, float], disk: float) -> dict:
    return {"peak_rss_mib": peaks, "disk_bytes": disk}


def test_a_size_whose_largest_step_would_not_fit_is_skipped_with_the_reason() -> None:
    references = {
        100_000: _footprint({"world": 500.0, "scoring": 800.0, "features": 400.0}, 1e8),
        1_000_000: _footprint({"world": 1400.0, "scoring": 4000.0, "features": 1000.0}, 1e9),
    }
    check = report.fit(10_000_000, references, free_mib=20_000, free_disk=50e9)
    assert not check["fits"]
    assert check["step"] == "scoring"
    assert check["memory_mib"] == pytest.approx(4000 + 3200 / 900_000 * 9_000_000)
    assert "scoring" in check["reason"] and "100k and 1M runs" in check["reason"]
    assert "disk" not in check["reason"]
    assert report.fit(1_000_000, references, free_mib=20_000, free_disk=50e9)["fits"]


def test_a_size_that_would_fill_the_disk_is_skipped_with_the_reason() -> None:
    references = {1_000_000: _footprint({"world": 500.0}, 2e9)}
    check = report.fit(10_000_000, references, free_mib=100_000, free_disk=10e9)
    assert not check["fits"]
    assert "disk" in check["reason"] and "memory" not in check["reason"]


def test_without_a_measured_size_the_stated_rule_decides() -> None:
    check = report.fit(10_000_000, {}, free_mib=20_000, free_disk=1e12)
    assert check["memory_mib"] == pytest.approx(report.RULE_BASE_MIB + 10 * report.RULE_MIB_PER_MILLION)
    assert not check["fits"] and "stated rule" in check["reason"]
    assert report.fit(100_000, {}, free_mib=20_000, free_disk=1e12)["fits"]


def test_the_fit_can_look_at_some_steps_only_and_scale_them() -> None:
    references = {1_000_000: _footprint({"world": 1000.0, "scoring": 9000.0}, 1e9)}
    scaling = report.Scaling(steps=("world",), memory_factor=2.0, disk_factor=3.0)
    check = report.fit(1_000_000, references, 5_000, 1e12, scaling)
    assert check["step"] == "world"
    assert check["memory_mib"] == pytest.approx(2000.0) and check["disk_bytes"] == pytest.approx(3e9)
    assert check["fits"]


def test_a_step_whose_rows_do_not_grow_with_the_size_is_not_scaled_by_it() -> None:
    references = {
        100_000: _footprint({"training": 700.0, "scoring": 600.0}, 1e8),
        1_000_000: _footprint({"training": 3400.0, "scoring": 1000.0}, 1e9),
    }

    def rows_of(step: str, size: int) -> float:
        return min(size, 1_000_000) if step == "training" else size

    check = report.fit(10_000_000, references, 20_000, 1e12, report.Scaling(rows_of=rows_of))
    assert check["fits"] and check["step"] == "scoring"
    assert check["memory_mib"] == pytest.approx(1000 + 400 / 900_000 * 9_000_000)
    assert not report.fit(10_000_000, references, 20_000, 1e12)["fits"]


def test_available_memory_is_read_from_meminfo() -> None:
    meminfo = "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20971520 kB\n"
    assert report.available_mib(meminfo) == pytest.approx(20480.0)
    with pytest.raises(ValueError, match="MemAvailable"):
        report.available_mib("MemTotal: 1 kB\n")


def test_a_stage_row_reads_like_the_readme_table() -> None:
    size = _size(1_000_000)
    row = report.markdown_row("simulate", _stage(989_579, 2.07, 3.0, 377, 0.37), 0.93, 0.8)
    assert row == "| simulate | 989,579 | 2.07 | 3.00 | 478k | 377 MiB | 0.37 | 5.6 | 0.93 | 0.80 |"
    assert report.markdown_row("materialize", size["materialize"]).startswith(
        "| materialize | 149,534 snapshot rows | 97.8 | 100.9 | 1.5k | 860 MiB | 2.90 | 34 |"
    )
    assert "| 1,833,250 (3 days) |" in report.markdown_row("training", size["training"])
    assert report.markdown_row("drift", size["drift"]).startswith("| drift (50k sample) |")
    assert "| 3.4 GiB |" in report.markdown_row("training", size["training"])


def test_the_markdown_shows_the_1m_day_the_other_sizes_and_the_skipped_ones() -> None:
    results = {
        "sizes": {
            100_000: _size(100_000, factor=0.1),
            1_000_000: _size(1_000_000),
            10_000_000: {"skipped": "its scoring step needs about 40 GiB of memory"},
        },
        "scaling_exponent": {"simulate": 1.0},
        "scaling_exponent_process": {"simulate": 0.5},
    }
    lines = report.markdown(json.loads(json.dumps(results)))  # as saved: the sizes' keys are strings
    assert lines[0].startswith("| stage | rows (1M day) |") and "exponent 100k->1M" in lines[0]
    assert lines[2].startswith("| simulate | 1,000,000 |") and lines[2].endswith("| 1.00 | 0.50 |")
    text = "\n".join(lines)
    assert "Chain of the 1M day" in text and "x27 (goal: within 8x: not met)" in text
    assert "At 100k rows the same stages take (work / process): simulate 0.21 / 0.30 s" in text
    assert "The 10M day was not run: its scoring step needs about 40 GiB of memory." in text


def test_a_stage_that_did_not_run_says_why_in_its_row() -> None:
    row = report.markdown_row("scoring", {"skipped": "needs training, which did not run"}, None, None)
    assert row.startswith("| scoring | not run: needs training, which did not run |")
    assert row.count("|") == report.markdown_row("simulate", _size(10)["simulate"], None, None).count("|")


def test_footprints_of_another_machine_are_not_reused(tmp_path) -> None:
    saved = {"machine": {"cpus": 64}, "sizes": {"1000000": {"footprint": _footprint({"world": 1.0}, 1.0)}}}
    report.save(saved, tmp_path / "latest.json")
    assert report.previous_footprints(tmp_path, {"cpus": 64}) == {
        1_000_000: saved["sizes"]["1000000"]["footprint"]
    }
    assert report.previous_footprints(tmp_path, {"cpus": 2}) == {}
    assert report.previous_footprints(tmp_path / "none", {"cpus": 64}) == {}
