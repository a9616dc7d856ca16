"""The day a `train_model` run trains as of: one day for the labels it waits for and the argv it runs.

A nightly run at ``D+1 02:00`` trains as of ``D``; a drift retrain or a manual run names its day
with ``as_of``. The `wait_for_labels` sensor and the training command must agree on it, and a
day that is not exactly ``YYYY-MM-DD`` never reaches a path.
"""

from __future__ import annotations

import datetime as dt
import runpy
from pathlib import Path

import pytest
from airflow.sdk import macros

from include.mlops.core import settings as settings_module

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"window_days": 14, "oot_days": 3, "reason": "nightly schedule", "rollback_to": None}


@pytest.fixture
def dag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLOPS_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("MLOPS_TRAINING_BACKEND", "local")
    settings_module.settings.cache_clear()
    try:
        yield runpy.run_path(str(ROOT / "dags" / "train_model.py"))["train_model"]()
    finally:
        settings_module.settings.cache_clear()


def _render(
    dag, as_of: str | None, logical: dt.datetime | None, run_after: dt.datetime | None = None
) -> tuple[str, str]:
    """The labels file the sensor waits for and the ``--as-of`` of the training command."""
    from types import SimpleNamespace

    context = {
        "params": {**PARAMS, "as_of": as_of},
        "logical_date": logical,
        "dag_run": SimpleNamespace(logical_date=logical, run_after=run_after or logical, partition_key=None),
        "macros": macros,
        "run_id": "scheduled__x",
        "dag": dag,
    }
    sensor = dag.get_task("wait_for_labels")
    sensor.render_template_fields(context)
    train = dag.get_task("train")
    train.render_template_fields(context)
    (argv,) = train.op_args
    return sensor.filepath, argv[argv.index("--as-of") + 1]


def test_a_nightly_run_trains_as_of_the_night_before_its_logical_date(dag, tmp_path: Path) -> None:
    path, as_of = _render(dag, None, dt.datetime(2026, 1, 21, 2, 0, tzinfo=dt.UTC))
    assert as_of == "2026-01-20"
    assert path == f"{tmp_path}/lake/labels/dt=2026-01-20/part-00000.parquet"


def test_a_drift_retrain_waits_for_the_labels_of_the_day_it_trains_as_of(dag, tmp_path: Path) -> None:
    path, as_of = _render(dag, "2026-02-03", dt.datetime(2026, 1, 25, 9, 30, tzinfo=dt.UTC))
    assert as_of == "2026-02-03"
    assert path == f"{tmp_path}/lake/labels/dt=2026-02-03/part-00000.parquet"


@pytest.mark.parametrize("bad", ["2026-02-*", "../2026-02-03", "2026-02-03/../../etc", "20260203"])
def test_an_as_of_that_is_not_a_day_never_reaches_the_sensors_path(dag, bad: str) -> None:
    with pytest.raises(ValueError, match="not a day"):
        _render(dag, bad, dt.datetime(2026, 1, 25, tzinfo=dt.UTC))


def test_training_waits_for_its_labels_and_rollback_does_not(dag) -> None:
    assert dag.get_task("wait_for_labels").downstream_task_ids == {"train"}
    assert dag.get_task("rollback").upstream_task_ids == {"choose"}
    assert dag.get_task("wait_for_labels").deferrable is True


def test_a_run_triggered_without_a_logical_date_trains_as_of_the_night_before_it_ran(dag, tmp_path) -> None:
    path, as_of = _render(dag, None, None, run_after=dt.datetime(2026, 1, 21, 9, 15, tzinfo=dt.UTC))
    assert as_of == "2026-01-20"
    assert path == f"{tmp_path}/lake/labels/dt=2026-01-20/part-00000.parquet"
