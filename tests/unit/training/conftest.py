"""A tiny lake under ``tmp_path``: the partitions the training rules look at, and nothing else."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

from include.mlops import features, lake
from include.mlops.core.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from include.mlops.core.settings import Settings

LAKE_START = dt.date(2026, 1, 1)
LAKE_END = dt.date(2026, 1, 25)


def lake_days(first: dt.date = LAKE_START, last: dt.date = LAKE_END) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


@pytest.fixture
def tiny_settings(tmp_path: Path) -> Settings:
    """Settings whose lake and reports live under ``tmp_path`` (nothing read from the environment)."""
    return load_settings({"MLOPS_HOME": str(tmp_path / "home")})


@pytest.fixture
def empty_partitions(tiny_settings: Settings) -> Callable[..., None]:
    """Write empty data files: the window rules look at which partitions exist, not inside them."""

    def write(dataset: str, days: Iterable[dt.date]) -> None:
        base = lake.root("lake", tiny_settings)
        for day in days:
            lake.write_bytes(lake.partition_at(base, dataset, day).join(lake.DATA_FILE), b"")

    return write


@pytest.fixture
def empty_snapshots(tiny_settings: Settings) -> Callable[..., None]:
    """Write empty customer and merchant feature snapshots of ``days``."""

    def write(days: Iterable[dt.date]) -> None:
        for day in days:
            for view in ("customer", "merchant"):
                lake.write_bytes(features.snapshot_location(view, day, tiny_settings), b"")

    return write
