"""The Feast definitions are deployed, never applied by a pipeline run.

``apply_definitions`` (``python -m include.mlops features apply``, ``make feast-apply``, the local
Airflow at start-up) registers ``feature_repo/``; ``plan_definitions`` (``features plan``, run in CI
by ``make feast-plan``) says what it would change without writing; ``materialize_day`` checks the
registry and stops, naming the deploy command, when it lacks the definitions or holds others.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from include.devtools.simulator import SimulationConfig, labels_for_day, transactions_for_day
from include.mlops import features as F
from include.mlops import lake
from include.mlops.__main__ import main as mlops_cli
from include.mlops.core.settings import load_settings

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration

SIM = SimulationConfig(seed=7, rows_per_day=300)
DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]


def world(home: Path, **extra: str) -> Settings:
    """Settings over ``home`` with the snapshots of :data:`DAYS` in its lake, and no registry."""
    s = load_settings({"MLOPS_HOME": str(home), **extra})
    for day in DAYS:
        for dataset, table in (
            ("transactions", transactions_for_day(day, SIM)),
            ("labels", labels_for_day(day, SIM)),
        ):
            lake.write_parquet(
                lake.partition_at(lake.location(s.lake_url), dataset, day).join(lake.DATA_FILE), table
            )
        F.compute_features_for_day(day, s)
    return s


def intervals(s: Settings) -> set[tuple[str, float, float]]:
    """The materialization history the registry holds, read from its database."""
    store = F.feature_store(s)
    return {
        (view.name, start.timestamp(), end.timestamp())
        for view in store.registry.list_feature_views(store.project, allow_cache=False)
        for start, end in view.materialization_intervals
    }


def cli(*args: str) -> tuple[int, str]:
    """``python -m include.mlops ARGS`` in this process: its exit status and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = mlops_cli(list(args))
    return status, out.getvalue()


def test_materializing_without_a_deployed_registry_names_the_deploy_command_and_creates_nothing(
    mlops_home: Path,
) -> None:
    s = world(mlops_home)
    with pytest.raises(F.FeaturesNotRegistered) as caught:
        F.materialize_day(DAYS[0], s)
    message = str(caught.value)
    assert F.DEPLOY_COMMAND in message and "make feast-apply" in message
    assert s.feast_registry in message
    assert not Path(s.feast_registry).exists(), "a reader must never create an empty registry"
    payment = transactions_for_day(DAYS[1], SIM).slice(0, 1).to_pylist()
    with pytest.raises(F.FeaturesNotRegistered, match="features apply"):
        F.online_features(payment, s)
    assert not Path(s.feast_registry).exists()


def test_a_registry_lacking_a_view_stops_materialization_until_the_definitions_are_deployed(
    mlops_home: Path,
) -> None:
    s = world(mlops_home)
    F.apply_definitions(s)
    store = F.feature_store(s)
    store.registry.delete_feature_view(F.CUSTOMER_VIEW, store.project)
    with pytest.raises(F.FeaturesNotRegistered) as caught:
        F.materialize_day(DAYS[0], s)
    assert f"create feature view {F.CUSTOMER_VIEW}" in str(caught.value)
    assert F.DEPLOY_COMMAND in str(caught.value)
    assert intervals(s) == set(), "nothing was materialized"

    F.apply_definitions(s)
    assert F.materialize_day(DAYS[0], s)["materialized"] == [F.CUSTOMER_VIEW, F.MERCHANT_VIEW]


def test_definitions_deployed_for_another_lake_stop_materialization_with_what_differs(
    mlops_home: Path, tmp_path: Path
) -> None:
    s = world(mlops_home)
    other_lake = tmp_path / "other-lake"
    deployed_elsewhere = load_settings({"MLOPS_HOME": str(mlops_home), "MLOPS_LAKE_URL": str(other_lake)})
    F.apply_definitions(deployed_elsewhere)
    with pytest.raises(F.FeaturesNotRegistered) as caught:
        F.materialize_day(DAYS[0], s)
    assert "update data source customer_daily_snapshots (file_options)" in str(caught.value)
    assert intervals(s) == set()


def test_the_plan_is_empty_once_deployed_and_stays_so_after_materializing(mlops_home: Path) -> None:
    s = world(mlops_home)
    before = F.plan_definitions(s)
    assert f"create feature view {F.CUSTOMER_VIEW}" in before["changes"]
    assert f"create feature service {F.FEATURE_SERVICE_NAME}" in before["changes"]
    assert not Path(s.feast_registry).exists(), "planning never creates the registry"

    F.apply_definitions(s)
    assert F.plan_definitions(s)["changes"] == []
    for day in DAYS:
        F.materialize_day(day, s)
    history = intervals(s)
    assert {name for name, _, _ in history} == {F.CUSTOMER_VIEW, F.MERCHANT_VIEW}
    # A materialized view carries its history: not a difference from the repository's definitions.
    assert F.plan_definitions(s)["changes"] == []
    # A deploy keeps the history (an apply that reset it would make the next backfill roll back).
    F.apply_definitions(s)
    assert intervals(s) == history


def test_an_object_the_repository_no_longer_defines_is_a_difference_the_deploy_removes(
    mlops_home: Path,
) -> None:
    from feast import Entity

    s = world(mlops_home)
    F.apply_definitions(s)
    F.feature_store(s).apply([Entity(name="terminal", join_keys=["terminal_id"])])
    assert F.plan_definitions(s)["changes"] == ["delete entity terminal"]
    with pytest.raises(F.FeaturesNotRegistered, match="delete entity terminal"):
        F.materialize_day(DAYS[0], s)
    assert F.apply_definitions(s)["deleted"] == ["terminal"]
    assert F.plan_definitions(s)["changes"] == []


def test_the_plan_command_checks_what_the_apply_command_deploys(mlops_home: Path) -> None:
    s = world(mlops_home)
    status, shown = cli("features", "plan", "--check")
    assert status == 1
    assert f"create feature view {F.MERCHANT_VIEW}" in shown and F.DEPLOY_COMMAND in shown
    assert not Path(s.feast_registry).exists()

    status, shown = cli("features", "apply")
    assert status == 0 and F.FEATURE_SERVICE_NAME in shown
    with sqlite3.connect(s.feast_registry) as db:
        views = {row[0] for row in db.execute("SELECT feature_view_name FROM feature_views")}
    assert views == {F.CUSTOMER_VIEW, F.MERCHANT_VIEW}

    status, shown = cli("features", "plan", "--check")
    assert status == 0 and "no changes" in shown
