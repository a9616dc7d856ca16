"""Fixtures of the fault tier: a sandboxed world whose settings the test process shares."""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING

import pytest

from include.mlops.core import settings as settings_module
from tests.faults.harness import Sandbox

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WORLD_ENV = {"MLOPS_TRAIN_THREADS": "1", "MLOPS_TRAIN_DEVICE": "cpu"}


def point_settings_at(mp: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The process settings from ``env`` only (service addresses of the tests kept)."""
    for name in list(os.environ):
        if name == "MLFLOW_TRACKING_URI" or (
            name.startswith("MLOPS_")
            and not name.startswith("MLOPS_TEST_")
            and name != "MLOPS_REQUIRE_SERVICES"
        ):
            mp.delenv(name)
    for name, value in env.items():
        mp.setenv(name, value)
    settings_module.settings.cache_clear()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """An empty world (``MLOPS_HOME`` under the test's folder) that the test process's settings use."""
    world = Sandbox(tmp_path / "world", tmp_path / "pristine")
    world.env = {**WORLD_ENV, "MLOPS_HOME": str(world.home)}
    world.home.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        point_settings_at(mp, world.env)
        try:
            yield world
        finally:
            settings_module.settings.cache_clear()


FEATURE_START = dt.date(2026, 1, 1)
FEATURE_ROWS = 2_000
FEATURE_SEED = 11


def feature_day(n: int) -> dt.date:
    """Day ``n`` of the feature world (day 1 is :data:`FEATURE_START`)."""
    return FEATURE_START + dt.timedelta(days=n - 1)


def write_lake_days(days: int) -> None:
    """Validated transactions and labels of ``days`` simulated days, straight into the lake."""
    from include.devtools import simulator
    from include.mlops import lake
    from include.mlops.core.settings import settings

    config = simulator.SimulationConfig(seed=FEATURE_SEED, rows_per_day=FEATURE_ROWS)
    base = lake.location(settings().lake_url)
    for n in range(1, days + 1):
        for name, table in (
            ("transactions", simulator.transactions_for_day(feature_day(n), config)),
            ("labels", simulator.labels_for_day(feature_day(n), config)),
        ):
            lake.write_parquet(lake.partition_at(base, name, feature_day(n)).join(lake.DATA_FILE), table)


@pytest.fixture(scope="session")
def shared_scored_world(tmp_path_factory: pytest.TempPathFactory):
    """The integration tier's scored world (a champion, features, predictions), built once per session."""
    from tests.integration.scored_world import build_world

    return build_world(tmp_path_factory)
