"""The day a run works on: one validated day for the landing sensor and every task.

A partition key (or ``day`` param) is rendered into the sensor's path and parsed by the tasks, so
both must take it from the same validated day: a glob or ``..`` must not reach a path, and a key
with trailing text must not be read as one day by the task and another by the sensor.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from include.mlops import orchestration as orch
from include.mlops.core import settings as settings_module

ROOT = Path(__file__).resolve().parents[3]
DAY = dt.date(2026, 1, 5)
BAD_DAYS = [
    "2026-01-05junk",
    "2026-01-*",
    "../2026-01-05",
    "2026-1-5",
    "20260105",
    "2026-02-30",
    "2026-01-05/../../etc",
    "2026-01-05\n",
    " 2026-01-05",
]
DAY_DAGS = ("ingest_transactions", "ingest_labels", "materialize_features", "score_transactions")


def _context(key: str | None = None, day: str | None = None, logical: dt.datetime | None = None) -> dict:
    """The parts of a task's context the day comes from."""
    return {
        "dag_run": SimpleNamespace(partition_key=key, logical_date=logical),
        "params": {"day": day},
        "logical_date": logical,
    }


@pytest.fixture
def landing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A local landing zone; the settings cache is reset around the test."""
    url = str(tmp_path / "landing")
    monkeypatch.setenv("MLOPS_LANDING_URL", url)
    settings_module.settings.cache_clear()
    yield url
    settings_module.settings.cache_clear()


def _rendered_marker(context: dict, dataset: str = "transactions") -> str:
    sensor = orch.landing_sensor(dataset)
    sensor.render_template_fields(context)
    return sensor.bucket_key if hasattr(sensor, "bucket_key") else sensor.filepath


@pytest.mark.parametrize(
    "context",
    [
        _context(key="2026-01-05"),
        _context(day="2026-01-05"),
        _context(logical=dt.datetime(2026, 1, 5, tzinfo=dt.UTC)),
        _context(key="2026-01-05", day="2026-03-01", logical=dt.datetime(2026, 2, 1, tzinfo=dt.UTC)),
    ],
    ids=["partition-key", "day-param", "logical-date", "key-first"],
)
def test_a_good_day_is_the_same_for_the_tasks_and_the_sensor(landing: str, context: dict):
    assert orch.partition_day(context) == DAY
    assert _rendered_marker(context) == f"{landing}/transactions/dt=2026-01-05/_SUCCESS"


@pytest.mark.parametrize("bad", BAD_DAYS, ids=repr)
@pytest.mark.parametrize("source", ["partition key", "`day` param"])
def test_a_bad_day_is_refused_by_the_tasks_and_the_sensor(landing: str, bad: str, source: str):
    context = _context(key=bad) if source == "partition key" else _context(day=bad)
    expected = rf"{re.escape(source)} {re.escape(repr(bad))} is not a day: expected .*YYYY-MM-DD"

    # The sensor fails while its template is rendered, before it waits for any path ...
    with pytest.raises(ValueError, match=expected):
        _rendered_marker(context)
    # ... and the tasks refuse the same day with the same message.
    with pytest.raises(ValueError, match=expected):
        orch.partition_day(context)


def test_the_sensor_on_an_s3_landing_zone_renders_the_same_day(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLOPS_LANDING_URL", "s3://landing/prod/")
    settings_module.settings.cache_clear()
    try:
        assert (
            _rendered_marker(_context(key="2026-01-05"), "labels")
            == "s3://landing/prod/labels/dt=2026-01-05/_SUCCESS"
        )
        with pytest.raises(ValueError, match=r"'2026-01-\*' is not a day"):
            _rendered_marker(_context(key="2026-01-*"), "labels")
    finally:
        settings_module.settings.cache_clear()


def test_the_sensor_reads_as_a_day_pattern_before_a_run(landing: str):
    from airflow.serialization.helpers import serialize_template_field

    sensor = orch.landing_sensor("transactions")
    shown = serialize_template_field(sensor.filepath, "filepath")
    assert shown == f"{landing}/transactions/dt=YYYY-MM-DD/_SUCCESS"
    assert shown in sensor.doc_md


@pytest.mark.parametrize("dag_id", DAY_DAGS)
def test_the_day_param_form_refuses_anything_but_a_day(landing: str, dag_id: str):
    from airflow.sdk.definitions.param import ParamValidationError

    dag = runpy.run_path(str(ROOT / "dags" / f"{dag_id}.py"), run_name="dag_file")[dag_id]()
    param = dag.params.get_param("day")
    assert param.schema.get("pattern") == orch.DAY_PATTERN
    assert param.resolve("2026-01-05") == "2026-01-05"
    assert param.resolve(None) is None
    for bad in ("2026-01-05junk", "2026-01-*", "../2026-01-05", "2026-1-5", "20260105"):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)


def test_the_ingest_dags_sensor_renders_within_its_dag(landing: str):
    dag = runpy.run_path(str(ROOT / "dags" / "ingest_labels.py"), run_name="dag_file")["ingest_labels"]()

    sensor = copy.deepcopy(dag.get_task("wait_for_drop"))
    sensor.render_template_fields(_context(key="2026-01-05"))
    assert sensor.filepath == f"{landing}/labels/dt=2026-01-05/_SUCCESS"

    sensor = copy.deepcopy(dag.get_task("wait_for_drop"))
    with pytest.raises(ValueError, match=r"partition key '2026-01-05junk' is not a day"):
        sensor.render_template_fields(_context(key="2026-01-05junk"))
