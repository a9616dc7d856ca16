"""The Evidently workspace rebuilt from the lake, read back as ``evidently ui`` reads it, and served.

The world is the shared scored world (``scored_world.py``: predictions of days 4-19, labels of days
1-19, drift from day 14). Drift verdicts are recorded for three days into reports of this test's
own, so the shared world's reports are left as they are.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING

import pytest

from include.devtools import dashboards
from tests.conftest import free_port
from tests.integration.scored_world import World, day, world_environment
from tests.unit.ops.recorded import record_verdict, verdict

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

CHECKED = (12, 14, 15)
LABELLED = tuple(range(4, 15))
"""Scored days whose five following days of labels are in the world (labels end on day 19)."""


@pytest.fixture(scope="module")
def workspace(scored_world: World, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dashboards")
    with world_environment(scored_world) as s, pytest.MonkeyPatch.context() as mp:
        from include.mlops.core import settings as settings_module

        mp.setenv("MLOPS_REPORTS_URL", str(root / "reports"))
        settings_module.settings.cache_clear()
        s = settings_module.settings()
        for n in CHECKED:
            record_verdict(verdict(day(n), drifted=4 if n >= 14 else 0), s)
        first = dashboards.build(root / "workspace", s)
        second = dashboards.build(root / "workspace", s)
        settings_module.settings.cache_clear()
    return {
        "path": root / "workspace",
        "first": first,
        "second": second,
        "project": str(dashboards.project_id(s)),
    }


def series(path: Path, project: str, metric: str, **labels: str) -> tuple[list, list]:
    """What a dashboard panel plots, as the Evidently UI's storage computes it: timestamps and values."""
    import uuid

    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage

    storage = InMemoryDataStorage(str(path))
    wanted = SeriesFilter(metric=f"evidently:metric_v2:{metric}", tags=[], metadata={}, metric_labels=labels)
    found = asyncio.run(storage.get_data_series(uuid.UUID(project), [wanted], None, None))
    assert len(found.series) == 1, found.series
    return [s.timestamp.date() for s in found.sources], found.series[0].values


def test_each_checked_day_has_a_drift_snapshot_and_each_labelled_day_a_classification_one(
    workspace: dict,
) -> None:
    built = workspace["first"]
    assert built["drift"] == [day(n).isoformat() for n in CHECKED] and not built["skipped"]
    assert built["classification"] == [day(n).isoformat() for n in LABELLED]


def test_the_panels_plot_drift_share_feature_psi_and_pr_auc_over_the_days(workspace: dict) -> None:
    path, project = workspace["path"], workspace["project"]
    days, shares = series(path, project, "DriftedColumnsCount", value_type="share")
    assert days == [day(n) for n in CHECKED]
    # The simulator drifts from day 14: more key features drift after it than before.
    assert shares[0] < shares[1] and shares[0] < shares[2]
    days, psi = series(path, project, "ValueDrift", column="amount_to_customer_mean_30d")
    assert days == [day(n) for n in CHECKED] and all(v >= 0 for v in psi)
    days, pr_auc = series(path, project, "PrAuc")
    assert days == [day(n) for n in LABELLED] and all(0 < v <= 1 for v in pr_auc)
    _, recall = series(path, project, "RecallAtFpr")
    assert all(0 <= v <= 1 for v in recall)


def test_a_rebuild_replaces_the_project_with_the_same_days(workspace: dict) -> None:
    from evidently.ui.workspace import Workspace

    assert {k: v for k, v in workspace["second"].items()} == {k: v for k, v in workspace["first"].items()}
    ws = Workspace(str(workspace["path"]))
    (project,) = ws.list_projects()
    assert str(project.id) == workspace["project"]
    assert len(ws.list_runs(project.id)) == len(CHECKED) + len(LABELLED)
    assert len(project.dashboard.model().panels) == 4


def test_evidently_ui_serves_the_workspace(workspace: dict) -> None:
    port = free_port()
    command = [sys.executable, "-m", "include.devtools", "dashboards", "--no-build", "--port", str(port)]
    command += ["--workspace", str(workspace["path"])]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        projects, deadline = None, time.monotonic() + 120
        while projects is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/projects", timeout=5) as answer:
                    projects = json.loads(answer.read())
            except OSError:
                time.sleep(1)
        assert projects is not None, "evidently ui did not answer"
        assert [p["id"] for p in projects] == [workspace["project"]]
    finally:
        import os
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
