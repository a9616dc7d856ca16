"""Batch scoring of a day with the champion and a shadow challenger (embedded profile).

The world (simulated days with drift from :data:`DRIFT_DAY` on, features, a Feast registry, a
champion trained on the clean days and the predictions of every monitored day) is built once per
session under pytest's base temporary folder (:func:`build_world`), shared with test_drift.py.
The tests here score a day the drift tests never read, and leave the registry's aliases as found.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from include.mlops import settings as settings_module
from include.mlops.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from include.mlops.settings import Settings

pytestmark = pytest.mark.integration

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
    from include.mlops import features, scoring, simulator, storage, training

    with world_environment(World(root, 0, "")) as s:
        config = simulator.SimulationConfig(seed=SEED, rows_per_day=ROWS_PER_DAY, drift_from=day(DRIFT_DAY))
        lake = storage.location(s.lake_url)
        for n in range(1, DAYS + 1):
            for name, table in (
                ("transactions", simulator.transactions_for_day(day(n), config)),
                ("labels", simulator.labels_for_day(day(n), config)),
            ):
                storage.write_parquet(lake.join(name, f"dt={day(n)}", "part-00000.parquet"), table)
        for n in range(1, DAYS + 1):
            features.compute_features_for_day(day(n), settings=s)
        features.apply_definitions(settings=s)
        trained = training.train(day(TRAIN_AS_OF), 3, 2, "initial model", "test__initial", s)
        client = training.configure_mlflow(s)
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


@pytest.fixture(scope="session")
def scored_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The simulated world with a champion and scored days (shared with test_drift.py)."""
    return build_world(tmp_path_factory)


@pytest.fixture(scope="module")
def world_settings(scored_world: World) -> Iterator[Settings]:
    """The process settings pointed at the shared world for this module."""
    with world_environment(scored_world) as s:
        yield s


def _distinct_challenger(s: Settings, world: World) -> int:
    """Register a small, different model (same inputs as the champion) as a new version."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    from include.mlops import training

    client = training.configure_mlflow(s)
    columns = training.feature_columns(f"models:/{s.model_name}/{world.champion_version}")
    reference = training.reference_sample(world.champion_run_id, s)
    x = reference[columns].astype("float64")
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "eta": 0.3, "nthread": 1, "seed": 3},
        xgb.DMatrix(x, label=reference[training.LABEL].to_numpy()),
        num_boost_round=5,
    )
    experiment_id = training.ensure_experiment(client, s)
    with mlflow.start_run(experiment_id=experiment_id, run_name="shadow-challenger"):
        info = mlflow.xgboost.log_model(
            booster,
            name=training.MODEL_ARTIFACT,
            signature=ModelSignature(inputs=Schema([ColSpec(DataType.double, c) for c in columns])),
            pip_requirements=training.pip_requirements(),
        )
    version = int(mlflow.register_model(info.model_uri, s.model_name).version)
    assert version != world.champion_version
    return version


def _transactions(s: Settings, n: int):
    import pyarrow.parquet as pq

    from include.mlops import storage

    loc = storage.location(s.lake_url).join("transactions", f"dt={day(n)}", "part-00000.parquet")
    return pq.read_table(loc.path)


def test_scoring_a_day_twice_leaves_one_copy(world_settings: Settings, scored_world: World) -> None:
    from include.mlops import features, scoring, storage

    s = world_settings
    first = scoring.score_day(day(SCORING_DAY), s)
    folder = scoring.predictions_location(day(SCORING_DAY), s)
    path = Path(folder.join(scoring.PART).path)
    before = path.read_bytes()
    # A stray file of an earlier, interrupted write must not survive a rerun either.
    storage.write_bytes(folder.join("part-00001.parquet"), before)

    second = scoring.score_day(day(SCORING_DAY), s)
    assert sorted(p.name for p in path.parent.iterdir()) == [scoring.PART]
    assert path.read_bytes() == before
    assert first["rows"] == second["rows"] == _transactions(s, SCORING_DAY).num_rows
    assert first["champion_version"] == scored_world.champion_version
    assert first["challenger_version"] is None

    frame = scoring.read_predictions(day(SCORING_DAY), s)
    assert frame["transaction_id"].is_unique
    assert set(frame["transaction_id"]) == set(
        _transactions(s, SCORING_DAY).column("transaction_id").to_pylist()
    )
    assert {*scoring.KEYS, *features.FEATURE_COLUMNS, "score_champion", "champion_version"} <= set(
        frame.columns
    )
    assert frame["score_champion"].between(0, 1).all() and frame["score_champion"].std() > 0
    assert (frame["champion_version"] == scored_world.champion_version).all()
    assert frame["score_challenger"].isna().all() and (frame["challenger_version"] == -1).all()


def test_the_shadow_challenger_is_scored_when_distinct(world_settings: Settings, scored_world: World) -> None:
    import numpy as np

    from include.mlops import scoring, training

    s = world_settings
    client = training.configure_mlflow(s)
    challenger = _distinct_challenger(s, scored_world)
    client.set_registered_model_alias(s.model_name, "challenger", str(challenger))
    try:
        result = scoring.score_day(day(SCORING_DAY), s)
        frame = scoring.read_predictions(day(SCORING_DAY), s)
    finally:
        client.delete_registered_model_alias(s.model_name, "challenger")
    assert result["champion_version"] == scored_world.champion_version
    assert result["challenger_version"] == challenger
    assert (frame["challenger_version"] == challenger).all()
    assert frame["score_challenger"].notna().all()
    expected = training.load_scorer(f"models:/{s.model_name}/{challenger}")(frame)
    assert np.allclose(frame["score_challenger"].to_numpy(), expected, atol=1e-6)
    champion = training.load_scorer(f"models:/{s.model_name}/{scored_world.champion_version}")(frame)
    assert np.allclose(frame["score_champion"].to_numpy(), champion, atol=1e-6)
    # A different model: the shadow scores are its own, not a copy of the champion's.
    assert not np.allclose(frame["score_challenger"].to_numpy(), frame["score_champion"].to_numpy())

    # The same version under both aliases is no challenger: nothing is scored in shadow.
    client.set_registered_model_alias(s.model_name, "challenger", str(scored_world.champion_version))
    try:
        again = scoring.score_day(day(SCORING_DAY), s)
    finally:
        client.delete_registered_model_alias(s.model_name, "challenger")
    assert again["challenger_version"] is None
    assert scoring.read_predictions(day(SCORING_DAY), s)["score_challenger"].isna().all()


def test_without_champion_nothing_is_scored(world_settings: Settings, tmp_path: Path) -> None:
    from include.mlops import scoring

    s = load_settings(
        {
            "MLOPS_HOME": str(world_settings.home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}",
            "MLOPS_MLFLOW_ARTIFACT_URL": str(tmp_path / "artifacts"),
        }
    )
    with pytest.raises(scoring.NoChampionError, match="no 'champion' alias"):
        scoring.score_day(day(SCORING_DAY), s)
    with pytest.raises(FileNotFoundError, match="run score_transactions first"):
        scoring.read_predictions(day(DAYS + 5), s)
