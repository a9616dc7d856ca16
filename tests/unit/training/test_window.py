"""Which days a training run uses, and the operator's message when the lake lacks one of them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING

import pytest

from include.mlops import lake
from include.mlops.training import TrainingDataError, check_window, day_range, training_window
from tests.unit.training.conftest import LAKE_END, LAKE_START, lake_days

if TYPE_CHECKING:
    from collections.abc import Callable

    from include.mlops.core.settings import Settings


@pytest.fixture
def full_lake(
    tiny_settings: Settings, empty_partitions: Callable[..., None], empty_snapshots: Callable[..., None]
) -> Settings:
    """Transactions, labels and feature snapshots of every day from 2026-01-01 to 2026-01-25."""
    empty_partitions("transactions", lake_days())
    empty_partitions("labels", lake_days())
    empty_snapshots(lake_days())
    return tiny_settings


def test_day_range_includes_both_ends() -> None:
    first = dt.date(2026, 1, 30)
    assert day_range(first, dt.date(2026, 2, 1)) == [first, dt.date(2026, 1, 31), dt.date(2026, 2, 1)]
    assert day_range(first, first) == [first]
    assert day_range(first, first - dt.timedelta(days=1)) == []


def test_the_window_ends_on_the_last_day_whose_payments_all_have_their_label(full_lake: Settings) -> None:
    window = training_window(LAKE_END, 16, 3, full_lake)
    # Labels through 01-25 and five days of label delay: payments fully labelled through 01-20.
    assert (window.latest_labels, window.labelled_through) == (LAKE_END, dt.date(2026, 1, 20))
    assert (window.oot_start, window.oot_end) == (dt.date(2026, 1, 18), dt.date(2026, 1, 20))
    assert (window.train_start, window.train_end) == (dt.date(2026, 1, 2), dt.date(2026, 1, 17))
    # The validation slice is the last fifth of the training days (round(16 * 0.2) = 3 days).
    assert window.validation_start == dt.date(2026, 1, 15)
    assert len(window.train_days) == 16 and len(window.oot_days) == 3
    assert window.label_days == day_range(dt.date(2026, 1, 3), LAKE_END)


def test_the_newest_labels_partition_with_data_on_or_before_as_of_sets_the_window(
    full_lake: Settings,
) -> None:
    assert training_window(dt.date(2026, 1, 23), 8, 2, full_lake).latest_labels == dt.date(2026, 1, 23)
    # A labels folder holding no data file (a drop in progress) does not count.
    folder = lake.partition_at(lake.root("lake", full_lake), "labels", dt.date(2026, 1, 23))
    lake.delete(folder.join(lake.DATA_FILE))
    lake.write_bytes(folder.join(lake.SUCCESS_MARKER), b"")
    assert training_window(dt.date(2026, 1, 23), 8, 2, full_lake).latest_labels == dt.date(2026, 1, 22)


def test_a_young_lake_shortens_the_window_to_start_on_its_second_day(full_lake: Settings) -> None:
    window = training_window(LAKE_END, 20, 3, full_lake)
    # The lake's first day has no feature snapshot before it: training starts the day after.
    assert (window.train_start, window.train_end) == (dt.date(2026, 1, 2), dt.date(2026, 1, 17))
    assert window.validation_start == dt.date(2026, 1, 15)


def test_without_labels_on_or_before_as_of_training_cannot_start(full_lake: Settings) -> None:
    with pytest.raises(TrainingDataError, match="no labels partition on or before 2025-12-31") as error:
        training_window(dt.date(2025, 12, 31), 16, 3, full_lake)
    assert "ingest labels before training" in str(error.value)


@pytest.mark.parametrize(
    ("window_days", "oot_days", "message"),
    [
        (1, 3, "window_days must be at least 2 (fit and validation days), not 1"),
        (16, 0, "oot_days must be at least 1, not 0"),
    ],
)
def test_a_window_too_small_to_fit_and_judge_is_refused(
    full_lake: Settings, window_days: int, oot_days: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        training_window(LAKE_END, window_days, oot_days, full_lake)


def test_a_lake_holding_every_partition_passes_the_check(full_lake: Settings) -> None:
    check_window(training_window(LAKE_END, 20, 3, full_lake), full_lake)


def test_every_missing_partition_is_named_for_the_operator(full_lake: Settings) -> None:
    window = dataclasses.replace(
        training_window(LAKE_END, 16, 3, full_lake), train_start=dt.date(2025, 12, 29)
    )
    with pytest.raises(TrainingDataError) as error:
        check_window(window, full_lake)
    message = str(error.value)
    assert "transactions dt=2025-12-29" in message and "transactions dt=2025-12-31" in message
    assert "labels dt=2025-12-30" in message
    assert "features/customer dt=2025-12-28" in message and "features/merchant dt=2025-12-31" in message
    assert "transactions dt=2026-01-01" not in message
    assert "features/customer dt=2026-01-01" not in message
    assert "run materialize_features" in message


def test_a_long_list_of_missing_partitions_is_cut_after_twenty(full_lake: Settings) -> None:
    window = dataclasses.replace(
        training_window(LAKE_END, 16, 3, full_lake), train_start=dt.date(2025, 12, 1)
    )
    with pytest.raises(TrainingDataError) as error:
        check_window(window, full_lake)
    # 31 transactions, 30 labels and 2 x 32 feature snapshots missing: 20 named, 105 counted.
    message = str(error.value)
    assert "and 105 more" in message
    assert message.count("dt=") == 20


def test_a_missing_labels_partition_inside_the_window_is_named(full_lake: Settings) -> None:
    assert LAKE_START < dt.date(2026, 1, 10) < LAKE_END
    lake.delete(lake.partition_at(lake.root("lake", full_lake), "labels", dt.date(2026, 1, 10)))
    with pytest.raises(TrainingDataError, match="labels dt=2026-01-10"):
        check_window(training_window(LAKE_END, 16, 3, full_lake), full_lake)
