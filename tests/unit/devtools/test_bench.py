"""The bench's world and steps: which days it builds, the thinned older days, a step's process."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from include.devtools import bench, bench_stages, simulator
from include.mlops import lake
from include.mlops.core.schema import LABELS, TRANSACTIONS
from include.mlops.core.settings import load_settings, settings
from include.mlops.training.window import training_window


def test_worlds_up_to_1m_keep_every_day_at_three_fifths_of_the_size() -> None:
    for rows in (100_000, 1_000_000):
        first, history, older, older_until = bench.world_args(rows)
        assert dt.date.fromisoformat(first) == bench.FIRST
        assert int(history) == int(older) == rows * 3 // 5
        assert (bench.DAY - dt.date.fromisoformat(older_until)).days == bench.RECENT_DAYS


def test_a_10m_world_keeps_its_last_week_full_and_caps_the_older_days() -> None:
    _, history, older, older_until = bench.world_args(10_000_000)
    assert int(history) == 6_000_000 and int(older) == bench.OLDER_DAY_ROWS
    # The default training reads older days only, so its rows do not grow past the 1M world's.
    assert bench.TRAIN_AS_OF - dt.timedelta(days=5) < dt.date.fromisoformat(older_until)


def test_the_default_training_is_estimated_from_the_rows_it_reads_not_the_size() -> None:
    assert bench.step_rows("training", 1_000_000) == bench.step_rows("training", 10_000_000) == 1_800_000
    assert bench.step_rows("training_floor", 100_000) == 180_000
    assert bench.step_rows("scoring", 10_000_000) == 10_000_000


def _lake_with_days(home, first: dt.date, last: dt.date):
    s = load_settings({"MLOPS_HOME": str(home)})
    tiny = pa.table({"transaction_id": ["t"]})
    day = first
    while day <= last:
        for dataset in (TRANSACTIONS.name, LABELS.name):
            lake.write_parquet(lake.partition_file(dataset, day, s), tiny)
        day += dt.timedelta(days=1)
    return s


@pytest.mark.parametrize("days", [2, 4, 30])
def test_the_training_world_holds_exactly_the_days_the_trainer_asks_for(tmp_path, days: int) -> None:
    (first, rows), (as_of, window_days, oot_days) = bench.training_plan(1_000_000, days)
    assert rows == "1000000"
    s = _lake_with_days(tmp_path, dt.date.fromisoformat(first), bench.DAY - dt.timedelta(days=1))
    window = training_window(dt.date.fromisoformat(as_of), int(window_days), int(oot_days), s)
    assert len(window.train_days) == days and len(window.oot_days) == 1
    # The first day of the world holds the snapshot the first training day is joined with.
    assert window.train_start - dt.timedelta(days=1) == dt.date.fromisoformat(first)


def test_the_default_training_window_fits_the_eleven_day_world(tmp_path) -> None:
    s = _lake_with_days(tmp_path, bench.FIRST, bench.DAY - dt.timedelta(days=1))
    window = training_window(bench.TRAIN_AS_OF, bench.TRAIN_WINDOW_DAYS, bench.TRAIN_OOT_DAYS, s)
    assert window.train_start == bench.FIRST + dt.timedelta(days=1)
    older_until = dt.date.fromisoformat(bench.world_args(10_000_000)[3])
    assert window.oot_end < older_until


def _ids_of(dataset: str, day: dt.date) -> pa.Array:
    return lake.read_parquet(lake.partition_file(dataset, day)).column("transaction_id").combine_chunks()


def test_thinned_older_days_keep_a_share_of_their_payments_and_only_those_labels(mlops_home) -> None:
    first = dt.date(2026, 3, 1)
    config = simulator.SimulationConfig(seed=7, rows_per_day=2000, n_customers=250, n_merchants=50)
    simulator.simulate(first, 8, config, settings().lake_url)
    days = [first + dt.timedelta(days=n) for n in range(8)]
    before = {d: _ids_of(TRANSACTIONS.name, d) for d in days}
    labelled_before = pa.concat_arrays([_ids_of(LABELS.name, d) for d in days])
    older = days[:2]

    bench_stages._thin(older, 0.25, days[-1])

    for d in older:
        kept = _ids_of(TRANSACTIONS.name, d)
        assert len(kept) == round(len(before[d]) * 0.25)
        assert pc.all(pc.is_in(kept, value_set=before[d])).as_py()
    kept_older = pa.concat_arrays([_ids_of(TRANSACTIONS.name, d) for d in older])
    dropped = pc.filter(
        pa.concat_arrays([before[d] for d in older]),
        pc.invert(pc.is_in(pa.concat_arrays([before[d] for d in older]), value_set=kept_older)),
    )
    labelled = pa.concat_arrays([_ids_of(LABELS.name, d) for d in days])
    assert not pc.any(pc.is_in(labelled, value_set=dropped)).as_py()
    # Every kept payment of an older day is still labelled (within five days, all in the lake), and
    # the labels of the other days' payments are untouched.
    assert pc.all(pc.is_in(kept_older, value_set=labelled)).as_py()
    assert len(labelled) == len(labelled_before) - len(dropped)
    for d in days[2:]:
        assert len(_ids_of(TRANSACTIONS.name, d)) == len(before[d])


def test_a_step_returns_its_last_json_line_and_its_wall_time() -> None:
    result = bench._run(["-c", "print('noise'); print('{\"rows\": 3}')"], dict(os.environ))
    assert result["rows"] == 3 and result["wall_seconds"] > 0


def test_a_failed_step_raises_with_its_error_output() -> None:
    with pytest.raises(bench.StepFailed, match="the lake is gone"):
        bench._run(["-c", "import sys; sys.exit('the lake is gone')"], dict(os.environ))
