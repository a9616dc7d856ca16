"""The ``mlops_metrics`` plugin without an Airflow: the endpoint refuses anonymous callers and serves
the exposition format, and its listener refreshes the textfiles after the tasks that change facts.

Authentication itself is Airflow's: an anonymous request is refused by Airflow's own dependency
here; a token against a real API server is checked in ``tests/e2e/test_ops_under_scheduler.py``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from include.mlops.core.settings import PROJECT_ROOT
from include.mlops.ops import CONTENT_TYPE, TEXTFILES
from tests.unit.ops.recorded import land, own_mlflow

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi.testclient import TestClient


def _plugin():
    spec = importlib.util.spec_from_file_location(
        "mlops_metrics_under_test", PROJECT_ROOT / "plugins" / "mlops_metrics.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plugin = _plugin()


def _client(signed_in: bool) -> TestClient:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = plugin.metrics_app()
    if signed_in:
        app.dependency_overrides[plugin.may_read_dags] = lambda: None
    outer = FastAPI()
    outer.mount("/mlops-metrics", app)
    return TestClient(outer, follow_redirects=False)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic YWRtaW46YWRtaW4="}])
def test_an_anonymous_caller_gets_no_metrics(mlops_home: Path, headers: dict) -> None:
    land("transactions", dt.date(2026, 1, 5), 42)
    with _client(signed_in=False) as anonymous:
        answer = anonymous.get("/mlops-metrics/metrics", headers=headers)
    assert answer.status_code in (401, 403)
    assert "mlops_rows_landed" not in answer.text


def test_a_signed_in_caller_gets_the_exposition_format(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_mlflow(mlops_home, monkeypatch)
    land("transactions", dt.date(2026, 1, 5), 42)
    with _client(signed_in=True) as client:
        answer = client.get("/mlops-metrics/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"] == CONTENT_TYPE
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    landed = [(s.labels["day"], s.value) for s in families["mlops_rows_landed"].samples]
    assert landed == [("2026-01-05", 42.0)]
    assert "mlops_champion_version" in families and "mlops_registry_facts_up" in families


def test_the_listener_refreshes_the_textfiles_of_the_facts_a_task_changed(mlops_home: Path) -> None:
    refresher = plugin.TextfileRefresher()
    refresher.on_task_instance_success(None, SimpleNamespace(dag_id="score_transactions", task_id="score"))
    assert [p.name for p in (mlops_home / "metrics").iterdir()] == [TEXTFILES["lake"]]
    refresher.on_task_instance_success(
        None, SimpleNamespace(dag_id="materialize_features", task_id="materialize")
    )
    refresher.on_task_instance_failed(
        None, SimpleNamespace(dag_id="train_model", task_id="choose"), error=None
    )
    assert [p.name for p in (mlops_home / "metrics").iterdir()] == [TEXTFILES["lake"]]


def test_a_failed_validation_refreshes_the_lake_textfile_too(mlops_home: Path) -> None:
    failed = SimpleNamespace(dag_id="ingest_labels", task_id="validate_and_land")
    plugin.TextfileRefresher().on_task_instance_failed(None, failed, error=RuntimeError("rejected"))
    assert (mlops_home / "metrics" / TEXTFILES["lake"]).exists()
