"""The scored world shared by test_scoring.py and test_drift.py (fixtures in conftest.py).

Simulated days with drift from :data:`DRIFT_DAY` on, their features, a Feast registry, a champion
trained on the clean days and the predictions of every monitored day, built once per session
under pytest's base temporary folder (:func:`build_world`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from include.mlops import registry
from include.mlops.core import settings as settings_module

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from include.mlops.core.settings import Settings

START = dt.date(2026, 1, 1)
DAYS = 19
ROWS_PER_DAY = 2_000
SEED = 11
DRIFT_DAY = 14
"""Days are numbered from 1 (= START); the simulator drifts from this day on."""
TRAIN_AS_OF = 11
"""Labels through day 11: payments labelled through day 6; OOT days 5-6, training days 2-4."""
FIRST_SCORED = 4
SCORING_DAY = 3
"""The day the scoring tests (re)score; the drift tests never read it."""

WORLD_ENV = {
    "MLOPS_TRAIN_THREADS": "1",
    "MLOPS_TRAIN_MAX_ROUNDS": "60",
    "MLOPS_TRAIN_DEVICE": "cpu",
}


def day(n: int) -> dt.date:
    """Day ``n`` of the world (day 1 is :data:`START`)."""
    return START + dt.timedelta(days=n - 1)


@dataclass(frozen=True)
class World:
    """Where the shared world lives and what it holds."""

    root: Path
    champion_version: int
    champion_run_id: str

    @property
    def home(self) -> Path:
        return self.root / "home"

    def environ(self) -> dict[str, str]:
        """The settings variables of this world."""
        return {"MLOPS_HOME": str(self.home)}


def _build_world(root: Path) -> dict:
    from include.devtools import simulator
    from include.mlops import features, lake, scoring, training

    with world_environment(World(root, 0, "")) as s:
        config = simulator.SimulationConfig(seed=SEED, rows_per_day=ROWS_PER_DAY, drift_from=day(DRIFT_DAY))
        base = lake.location(s.lake_url)
        for n in range(1, DAYS + 1):
            for name, table in (
                ("transactions", simulator.transactions_for_day(day(n), config)),
                ("labels", simulator.labels_for_day(day(n), config)),
            ):
                lake.write_parquet(lake.partition_at(base, name, day(n)).join(lake.DATA_FILE), table)
        for n in range(1, DAYS + 1):
            features.compute_features_for_day(day(n), settings=s)
        features.apply_definitions(settings=s)
        trained = training.train(day(TRAIN_AS_OF), 3, 2, "initial model", "test__initial", s)
        client = registry.configure_mlflow(s)
        client.set_registered_model_alias(s.model_name, "champion", str(trained["version"]))
        client.delete_registered_model_alias(s.model_name, "challenger")
        for n in range(FIRST_SCORED, DAYS + 1):
            scoring.score_day(day(n), s)
    return {"champion_version": trained["version"], "champion_run_id": trained["run_id"]}


def build_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The world under the session's base temporary folder, built by the first caller (file lock)."""
    root = tmp_path_factory.getbasetemp() / "scored-world"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        ready = root / "READY"
        if not ready.exists():
            ready.write_text(json.dumps(_build_world(root)))
        info = json.loads(ready.read_text())
    return World(root, int(info["champion_version"]), str(info["champion_run_id"]))


@contextlib.contextmanager
def world_environment(world: World) -> Iterator[Settings]:
    """The process settings pointed at ``world`` while inside."""
    with pytest.MonkeyPatch.context() as mp:
        # Every project setting from the caller's environment is dropped (service addresses kept).
        for name in list(os.environ):
            if name == "MLFLOW_TRACKING_URI" or (
                name.startswith("MLOPS_")
                and not name.startswith("MLOPS_TEST_")
                and name != "MLOPS_REQUIRE_SERVICES"
            ):
                mp.delenv(name)
        for name, value in {**WORLD_ENV, **world.environ()}.items():
            mp.setenv(name, value)
        settings_module.settings.cache_clear()
        try:
            yield settings_module.settings()
        finally:
            settings_module.settings.cache_clear()
