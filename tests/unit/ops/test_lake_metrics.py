"""The lake's facts as Prometheus metrics: drops, quarantines, freshness, drift and performance per day.

The lake is filled by the stages' own writers (``recorded.py``); the metrics are read back from the
exposition text, as Prometheus reads them.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from include.mlops import lake
from include.mlops.core.alerting import OpsSettings
from include.mlops.core.settings import settings
from include.mlops.ops import LAKE, days_in_a_row, lake_samples, render
from tests.unit.ops.recorded import land, performance, quarantine, record_verdict, verdict

if TYPE_CHECKING:
    from pathlib import Path


def day(n: int) -> dt.date:
    return dt.date(2026, 1, n)


def scrape(ops: OpsSettings | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(name, sorted labels): value}`` of the lake's samples, parsed from the exposition text."""
    text = render(lake_samples(ops=ops or OpsSettings.from_env({}), now=1_800_000_000.0), (LAKE,)).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get(("mlops_" + name, tuple(sorted(labels.items()))))


@pytest.fixture
def world(mlops_home: Path) -> Path:
    """Twelve days: transactions of day 11 quarantined, labels of day 5 unreadable, drift from day 9
    (a retrain on day 9, day 10 held by the cooldown, day 11 not checked, day 12 drifted again)."""
    s = settings()
    for n in range(1, 13):
        if n != 11:
            land("transactions", day(n), 100 + n)
        if n != 5:
            land("labels", day(n), 50 + n)
        lake.write_parquet(lake.partition_file(lake.feature_snapshots("customer"), day(n)), _one_row())
    quarantine("transactions", day(11), s, failed=2, rows=1800)
    quarantine("labels", day(5), s, failed=0)
    for n in (4, 5, 6, 7, 8, 9, 10, 12):
        land(lake.PREDICTIONS, day(n), 90 + n)
    for n in (4, 5, 6, 7, 8):
        record_verdict(verdict(day(n), drifted=1))
    record_verdict(verdict(day(9), drifted=4, prediction=0.3))
    record_verdict(verdict(day(10), drifted=5, last_trigger_day=day(9)))
    record_verdict(verdict(day(12), drifted=3, last_trigger_day=day(9), perf=performance(0.25, 0.2)))
    return mlops_home


def _one_row():
    import pyarrow as pa

    return pa.table({"customer_id": ["c1"]})


def test_each_day_reports_its_landed_rows_and_whether_its_drop_is_quarantined(world: Path) -> None:
    found = scrape()
    assert value(found, "rows_landed", dataset="transactions", day="2026-01-10") == 110
    assert value(found, "drop_quarantined", dataset="transactions", day="2026-01-10") == 0
    assert value(found, "validation_failed_expectations", dataset="transactions", day="2026-01-10") == 0
    assert value(found, "rows_landed", dataset="transactions", day="2026-01-11") is None
    assert value(found, "drop_quarantined", dataset="transactions", day="2026-01-11") == 1
    assert value(found, "validation_failed_expectations", dataset="transactions", day="2026-01-11") == 2
    assert value(found, "rows_quarantined", dataset="transactions", day="2026-01-11") == 1800
    # An unreadable labels drop: one failure per unreadable file, its rows unknown.
    assert value(found, "drop_quarantined", dataset="labels", day="2026-01-05") == 1
    assert value(found, "validation_failed_expectations", dataset="labels", day="2026-01-05") == 1
    assert value(found, "rows_quarantined", dataset="labels", day="2026-01-05") is None
    assert value(found, "quarantined_days", dataset="transactions") == 1


def test_freshness_is_the_newest_day_as_a_timestamp(world: Path) -> None:
    found = scrape()
    midnight = dt.datetime(2026, 1, 12, tzinfo=dt.UTC).timestamp()
    assert value(found, "last_landed_day_timestamp_seconds", dataset="transactions") == midnight
    assert value(found, "last_landed_day_timestamp_seconds", dataset="labels") == midnight
    assert value(found, "features_last_day_timestamp_seconds", view="customer") == midnight
    assert value(found, "rows_scored", day="2026-01-12") == 102
    assert (
        value(found, "lake_facts_up") == 1 and value(found, "lake_facts_timestamp_seconds") == 1_800_000_000
    )


def test_drift_per_day_and_the_days_in_a_row(world: Path) -> None:
    found = scrape()
    assert value(found, "drift_share", day="2026-01-09") == pytest.approx(0.4)
    assert value(found, "drifted_features", day="2026-01-09") == 4
    # The most drifted of the ten key features (recorded.summary: PSI 0.3 + 0.1 i for the drifted).
    assert value(found, "drift_top_feature_psi", day="2026-01-09", feature="feature_3") == pytest.approx(0.6)
    assert value(found, "prediction_psi", day="2026-01-09") == pytest.approx(0.3)
    assert value(found, "drift_signal", day="2026-01-09", signal="features") == 1
    assert value(found, "drift_signal", day="2026-01-09", signal="prediction") == 1
    assert value(found, "drift_retrain_requested", day="2026-01-09") == 1
    assert value(found, "drift_retrain_requested", day="2026-01-10") == 0
    assert value(found, "drift_share", day="2026-01-06") == pytest.approx(0.1)
    assert value(found, "drift_check_seconds", day="2026-01-06") == pytest.approx(3.5)
    assert value(found, "retrain_requests") == 1
    # Day 11 was never checked: the run of drifted days restarts on day 12.
    assert value(found, "drift_signal_days_in_a_row") == 1
    assert (
        value(found, "last_checked_day_timestamp_seconds")
        == dt.datetime(2026, 1, 12, tzinfo=dt.UTC).timestamp()
    )


def test_drifted_days_in_a_row_stop_at_a_quiet_or_missing_day() -> None:
    drifted, quiet = {"signals": ["features"]}, {"signals": []}
    assert days_in_a_row({day(9): drifted, day(10): drifted, day(11): drifted}) == 3
    assert days_in_a_row({day(9): drifted, day(10): quiet, day(11): drifted}) == 1
    assert days_in_a_row({day(9): drifted, day(11): drifted}) == 1
    assert days_in_a_row({day(11): quiet}) == 0 and days_in_a_row({}) == 0


def test_performance_on_labelled_days_and_the_floors_it_is_judged_by(world: Path) -> None:
    found = scrape()
    assert value(found, "model_pr_auc", day="2026-01-12", version="1") == pytest.approx(0.25)
    assert value(found, "model_recall_at_fpr", day="2026-01-12", version="1", fpr="0.01") == pytest.approx(
        0.2
    )
    assert value(found, "model_latest_pr_auc", version="1") == pytest.approx(0.25)
    assert value(found, "model_latest_recall_at_fpr", version="1", fpr="0.01") == pytest.approx(0.2)
    assert value(found, "model_pr_auc", day="2026-01-09", version="1") is None  # not measured that day
    assert value(found, "policy_min_pr_auc") == pytest.approx(0.30)
    assert value(found, "policy_drift_share") == pytest.approx(0.3)
    assert value(found, "policy_drop_deadline_hours") == 6


def test_per_day_labels_are_bounded_by_the_retention_window(world: Path) -> None:
    found = scrape(OpsSettings.from_env({"MLOPS_METRICS_RETENTION_DAYS": "3"}))
    days = {dict(labels).get("day") for (_, labels) in found} - {None}
    assert days == {"2026-01-10", "2026-01-11", "2026-01-12"}
    # Facts that are not per day keep counting the whole history.
    assert value(found, "retrain_requests") == 1
    assert value(found, "quarantined_days", dataset="labels") == 0


def test_an_empty_lake_exports_its_families_and_policies_but_no_day(mlops_home: Path) -> None:
    found = scrape()
    assert value(found, "lake_facts_up") == 1
    assert value(found, "retrain_requests") == 0
    assert not [key for key in found if "day" in dict(key[1])]


def test_an_unreadable_lake_says_so_instead_of_failing(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_LAKE_URL", "gopher://nowhere/lake")
    from include.mlops.core import settings as settings_module

    settings_module.settings.cache_clear()
    found = scrape()
    assert value(found, "lake_facts_up") == 0
    assert value(found, "policy_min_pr_auc") == pytest.approx(0.30)
