"""The training entrypoint stops before any work when the lake cannot serve the window."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

from include.mlops.training import TrainingDataError, train
from tests.unit.training.conftest import lake_days

if TYPE_CHECKING:
    from collections.abc import Callable

    from include.mlops.core.settings import Settings


def test_training_before_the_first_labels_stops_with_the_reason(
    tiny_settings: Settings, empty_partitions: Callable[..., None]
) -> None:
    empty_partitions("labels", lake_days())
    with pytest.raises(TrainingDataError, match="no labels partition on or before 2025-12-31"):
        train(dt.date(2025, 12, 31), 16, 3, "before the lake", None, tiny_settings)


def test_training_with_a_bad_knob_stops_before_reading_the_lake(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops.core.settings import SettingsError

    monkeypatch.setenv("MLOPS_TRAIN_MAX_ROUNDS", "many")
    # The lake is empty: the knobs are read (and refused) first.
    with pytest.raises(SettingsError, match="MLOPS_TRAIN_MAX_ROUNDS='many' is not an integer"):
        train(dt.date(2026, 1, 25), 16, 3, "bad knob", None, tiny_settings)
