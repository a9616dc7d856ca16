"""The day's sample: deterministic, bounded, the same payments whatever the row order."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from include.mlops.monitoring.predictions import ID, SCORE, VERSION, day_version, sample_positions

IDS = pa.array([f"t20260101-{i:07d}" for i in range(5_000)])


def test_sampling_is_deterministic_and_bounded() -> None:
    picked = sample_positions(IDS, 1_000, seed=7)
    assert picked is not None and len(picked) == 1_000 and len(set(picked.tolist())) == 1_000
    assert np.all(np.diff(picked) > 0)
    assert np.array_equal(picked, sample_positions(IDS, 1_000, seed=7))
    assert not np.array_equal(picked, sample_positions(IDS, 1_000, seed=8))


def test_sampling_picks_the_same_payments_whatever_the_row_order() -> None:
    picked = sample_positions(IDS, 1_000, seed=7)
    order = np.random.default_rng(1).permutation(len(IDS))
    shuffled = IDS.take(pa.array(order))
    again = sample_positions(shuffled, 1_000, seed=7)
    assert picked is not None and again is not None
    assert set(shuffled.take(pa.array(again)).to_pylist()) == set(IDS.take(pa.array(picked)).to_pylist())


def test_a_day_no_larger_than_the_sample_is_kept_whole() -> None:
    assert sample_positions(IDS, 5_000, seed=7) is None
    assert sample_positions(pa.chunked_array([IDS[:10], IDS[10:20]]), 20, seed=7) is None


def test_the_day_belongs_to_the_version_that_scored_most_of_it() -> None:
    table = pa.table({ID: ["a", "b", "c"], SCORE: [0.1, 0.2, 0.3], VERSION: [3, 4, 4]})
    assert day_version(table, dt.date(2026, 1, 1)) == 4
    with pytest.raises(RuntimeError, match="the predictions of 2026-01-01 are empty: nothing to monitor"):
        day_version(table.slice(0, 0), dt.date(2026, 1, 1))
