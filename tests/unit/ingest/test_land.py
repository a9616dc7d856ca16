"""Where a day's folders are, and the paths of ingest_day that end before Great Expectations runs."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest

from include.devtools.simulator import SimulationConfig, transactions_for_day
from include.mlops import lake
from include.mlops.core import settings as settings_module
from include.mlops.ingest import (
    REJECTION_NAME,
    ROW_COUNT_HISTORY,
    DropIncomplete,
    DropRejected,
    drop_marker_url,
    ingest_day,
    partition_url,
    recent_row_counts,
    settled,
)

if TYPE_CHECKING:
    from pathlib import Path

DAY = dt.date(2026, 1, 5)


def lake_partition(dataset: str, day: dt.date, rows: int) -> None:
    """A lake partition of ``rows`` rows (only its row count matters here)."""
    loc = lake.location(partition_url("lake", dataset, day)).join(lake.DATA_FILE)
    lake.write_parquet(loc, pa.table({"transaction_id": [f"t{i}" for i in range(rows)]}))


def test_drop_and_partition_urls_follow_the_contract_layout(mlops_home: Path) -> None:
    s = settings_module.settings()
    assert drop_marker_url("transactions", DAY) == f"{s.landing_url}/transactions/dt=2026-01-05/_SUCCESS"
    assert partition_url("lake", "labels", DAY) == f"{s.lake_url}/labels/dt=2026-01-05"
    assert partition_url("reports", "labels", DAY) == f"{s.reports_url}/validation/labels/dt=2026-01-05"
    with pytest.raises(ValueError, match="'attic': expected one of landing, lake, quarantine, reports"):
        partition_url("attic", "labels", DAY)
    with pytest.raises(ValueError, match="unknown dataset 'payments': expected one of transactions, labels"):
        partition_url("lake", "payments", DAY)


def test_row_count_history_reads_the_last_partitions_before_the_day(mlops_home: Path) -> None:
    days = [DAY - dt.timedelta(days=i) for i in range(1, 10)]
    for i, day in enumerate(days):
        lake_partition("transactions", day, 100 + i)
    lake_partition("transactions", DAY + dt.timedelta(days=1), 5)  # after the day: never counted
    lake.write_bytes(lake.location(partition_url("lake", "transactions", DAY - dt.timedelta(days=10))), b"")
    expected = [100 + days.index(d) for d in sorted(days)[-ROW_COUNT_HISTORY:]]
    assert recent_row_counts("transactions", DAY) == expected


def test_a_day_is_settled_by_its_lake_partition_or_its_quarantine_report(mlops_home: Path) -> None:
    assert settled("labels", DAY) is None
    quarantine = lake.location(partition_url("quarantine", "labels", DAY))
    lake.write_bytes(quarantine.join(REJECTION_NAME), b"{}")
    assert settled("labels", DAY) == "quarantine"
    lake_partition("labels", DAY, 3)
    assert settled("labels", DAY) == "lake"


def test_a_drop_without_its_marker_is_incomplete_and_touches_nothing(mlops_home: Path) -> None:
    with pytest.raises(DropIncomplete, match="does not exist yet, nor its _SUCCESS marker"):
        ingest_day("transactions", DAY)
    landing = lake.location(partition_url("landing", "transactions", DAY))
    lake.write_bytes(landing.join("part-00000.parquet"), b"half written")
    with pytest.raises(DropIncomplete, match=r"has files but no _SUCCESS marker\. The producer writes"):
        ingest_day("transactions", DAY)
    # An incomplete drop is not judged: nothing goes to the lake or the quarantine.
    assert settled("transactions", DAY) is None
    assert not lake.exists(lake.location(partition_url("lake", "transactions", DAY)))
    assert not lake.exists(lake.location(partition_url("quarantine", "transactions", DAY)))


def test_an_unreadable_drop_is_quarantined_with_the_operators_message(
    mlops_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    landing = lake.location(partition_url("landing", "transactions", DAY))
    lake.write_parquet(
        landing.join("part-00000.parquet"), transactions_for_day(DAY, SimulationConfig(rows_per_day=20))
    )
    lake.write_bytes(landing.join("part-00001.parquet"), b"")
    lake.write_bytes(landing.join(lake.SUCCESS_MARKER), b"")
    leftover = lake.location(partition_url("lake", "transactions", DAY)).join("part-00007.parquet")
    lake.write_bytes(leftover, b"left by a crashed writer")

    with (
        caplog.at_level(logging.WARNING, logger="include.mlops.ingest"),
        pytest.raises(DropRejected) as caught,
    ):
        ingest_day("transactions", DAY)

    error = caught.value
    report = lake.location(partition_url("quarantine", "transactions", DAY)).join(REJECTION_NAME)
    assert str(error).splitlines() == [
        "transactions drop of 2026-01-05 rejected: 1 problem reading the files.",
        "  - part-00001.parquet: the file is empty (0 bytes)",
        f"Quarantine report: {report.url}",
        "Nothing of 2026-01-05 is in the lake.",
        f"The landing files in {landing.url} were left untouched. Fix the drop there (data files first, "
        "_SUCCESS last) and rerun 2026-01-05 (clear that day's run in Airflow).",
    ]
    assert (error.dataset, error.day, error.report_url, error.docs_url) == (
        "transactions",
        DAY,
        report.url,
        None,
    )
    assert error.problems == ("part-00001.parquet: the file is empty (0 bytes)",)
    body = json.loads(lake.read_bytes(report))
    assert body["reason"] == "unreadable" and body["message"] == str(error)
    assert [f["name"] for f in body["files"]] == ["part-00000.parquet", "part-00001.parquet"]
    assert not lake.exists(lake.location(partition_url("lake", "transactions", DAY)))
    assert settled("transactions", DAY) == "quarantine"
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert report.url in caplog.records[0].getMessage()
