"""The notifier's reading of Airflow contexts: a rejected drop reports its quarantine, a late drop alerts
only while its marker is missing, and nothing it does can fail a task.

The notifier under Airflow's own task runner and triggerer is in ``tests/integration/test_notifications.py``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest
from airflow.sdk import AsyncCallback, DeadlineAlert
from airflow.sdk.exceptions import AirflowFailException

from include.mlops import lake
from include.mlops.core.settings import settings
from include.mlops.ingest.land import DropRejected
from include.mlops.ops import LATE_DROP, MlopsNotifier, drop_deadline, read_alert_log
from tests.unit.ops.recorded import quarantine

if TYPE_CHECKING:
    from pathlib import Path

DAY = dt.date(2026, 1, 5)


def deadline_context(day: str | None = "2026-01-05", dataset: str = "transactions") -> dict:
    """The context the scheduler hands a missed deadline's callback (``Deadline.handle_miss``)."""
    return {
        "dag_run": {
            "dag_id": f"ingest_{dataset}",
            "dag_run_id": f"scheduled__{day}",
            "partition_key": day,
            "logical_date": None,
            "conf": {},
            "state": "running",
        },
        "deadline": {"id": "0195", "deadline_time": dt.datetime(2026, 1, 6, 6, tzinfo=dt.UTC)},
    }


def test_a_rejected_drop_failing_its_task_reports_the_quarantine(mlops_home: Path) -> None:
    recorded = quarantine("transactions", DAY, settings(), failed=2)
    rejected = DropRejected(
        recorded["message"],
        dataset="transactions",
        day=DAY,
        report_url=recorded["report_url"],
        problems=recorded["problems"],
    )
    try:
        raise AirflowFailException(str(rejected)) from rejected
    except AirflowFailException as failure:
        error = failure
    alert = MlopsNotifier("failure").alert_for({"exception": error, "ti": None})
    assert alert.event == "drop_quarantined" and alert.day == "2026-01-05"
    assert alert.title == "transactions drop of 2026-01-05 quarantined: 2 failed expectations"
    assert alert.why.startswith("col_0 is between 0 and 50000: 3 of 1800 rows fail, e.g. -1.0")
    assert alert.facts["failed_expectations"] == [
        "expect_column_values_to_be_between(col_0)",
        "expect_column_values_to_be_between(col_1)",
    ]
    assert alert.links["Quarantine report"].endswith(
        "/mlops/quarantine/transactions/dt=2026-01-05/rejection.json"
    )


def test_a_late_drop_alerts_with_its_marker_and_deadline(mlops_home: Path) -> None:
    alert = MlopsNotifier(LATE_DROP, "transactions").alert_for(deadline_context())
    marker = lake.partition("landing", "transactions", DAY).join(lake.SUCCESS_MARKER).url
    assert alert.event == "drop_late" and alert.facts["marker"] == marker
    assert alert.title == "transactions drop of 2026-01-05 has not landed by 2026-01-06 06:00 UTC"


def test_a_drop_landed_by_its_deadline_is_quiet(mlops_home: Path) -> None:
    lake.write_bytes(lake.partition("landing", "labels", DAY).join(lake.SUCCESS_MARKER), b"")
    assert MlopsNotifier(LATE_DROP, "labels").alert_for(deadline_context(dataset="labels")) is None


def test_a_manual_run_takes_its_day_from_the_conf(mlops_home: Path) -> None:
    context = deadline_context(day=None)
    context["dag_run"]["conf"] = {"day": "2026-01-07"}
    assert MlopsNotifier(LATE_DROP, "transactions").alert_for(context).day == "2026-01-07"


def test_the_deadline_alert_counts_from_the_queued_run_and_awaits_the_notifier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOPS_ALERT_DROP_DEADLINE_HOURS", "7.5")
    alert = drop_deadline("labels")
    assert isinstance(alert, DeadlineAlert) and isinstance(alert.callback, AsyncCallback)
    assert type(alert.reference).__name__ == "DagRunQueuedAtDeadline"
    assert alert.interval == dt.timedelta(hours=7.5)
    assert alert.callback.path == "include.mlops.ops.notifier.MlopsNotifier"
    assert alert.callback.kwargs == {"event": "late_drop", "dataset": "labels"}


def test_an_unknown_event_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="unknown notifier event 'paged'"):
        MlopsNotifier("paged")


def test_a_notification_that_cannot_be_built_warns_and_never_raises(
    mlops_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    MlopsNotifier(LATE_DROP, "transactions").notify({"dag_run": "not a run"})
    assert "the late_drop notification could not be sent" in caplog.text
    assert read_alert_log() == []
