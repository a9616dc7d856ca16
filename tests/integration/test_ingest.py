"""Ingestion end to end on simulated days: good days land, bad ones are quarantined, reruns replace.

Real Great Expectations, real parquet and CSV, the local store and an S3 API server on loopback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from include.devtools.simulator import write_drop
from include.mlops import lake
from include.mlops.core import settings as settings_module
from include.mlops.core.schema import DATASETS, LABELS, TRANSACTIONS
from include.mlops.ingest import (
    REJECTION_NAME,
    DropRejected,
    build_suite,
    ingest_day,
    partition_url,
    recent_row_counts,
    settled,
    suite_expectations,
)
from tests.integration.bad_drops import CORPUS, BadDrop, good_table, with_values

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 1, 5)


def _settings() -> settings_module.Settings:
    return settings_module.settings()


def _drop(dataset: str, day: dt.date, fmt: str = "parquet", table: pa.Table | None = None) -> None:
    write_drop(
        _settings().landing_url, dataset, day, good_table(dataset, day) if table is None else table, fmt
    )


def _files(url: str) -> dict[str, bytes]:
    """Every file under a folder (recursively), by relative path."""
    loc = lake.location(url)
    infos = loc.fs.get_file_info(pa.fs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    return {
        i.path[len(loc.path) + 1 :]: lake.read_bytes(lake.Location(loc.fs, i.path, i.path))
        for i in infos
        if i.type == pa.fs.FileType.File
    }


def _lake_table(dataset: str, day: dt.date) -> pa.Table:
    loc = lake.location(partition_url("lake", dataset, day)).join(lake.DATA_FILE)
    return pq.read_table(pa.BufferReader(lake.read_bytes(loc)))


def _seed_lake(dataset: str, days: list[dt.date]) -> None:
    """Good partitions written straight into the lake, for the row-count history."""
    for day in days:
        loc = lake.location(partition_url("lake", dataset, day)).join(lake.DATA_FILE)
        lake.write_parquet(loc, good_table(dataset, day))


def _matches(line: str, pattern: str) -> bool:
    position = 0
    for fragment in pattern.split(" … "):
        found = line.find(fragment, position)
        if found < 0:
            return False
        position = found + len(fragment)
    return True


# --- the suite is derived from the schema ------------------------------------------------------


@pytest.mark.parametrize("dataset", list(DATASETS.values()), ids=list(DATASETS))
def test_the_gx_suite_holds_the_expectations_derived_from_the_schema(dataset):
    specs = suite_expectations(dataset, DAY, [1000, 1100])
    suite = build_suite(dataset, DAY, [1000, 1100])
    assert suite.name == dataset.name
    assert [type(e).__name__ for e in suite.expectations] == [s.kind for s in specs]
    for expectation, spec in zip(suite.expectations, specs, strict=True):
        assert expectation.description == spec.description
        assert getattr(expectation, "column", None) == spec.column


# --- good days -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_good_day_lands_with_every_row_sorted_by_key(mlops_home: Path, fmt: str):
    expected = good_table("transactions", DAY)
    _drop("transactions", DAY, fmt)

    result = ingest_day("transactions", DAY)

    landed = _lake_table("transactions", DAY)
    assert result.rows == landed.num_rows == expected.num_rows
    assert landed.schema == TRANSACTIONS.arrow_schema
    ids = landed["transaction_id"].to_pylist()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert landed.sort_by("transaction_id").equals(expected.sort_by("transaction_id"))
    lake_file = lake.location(result.partition_url).join(lake.DATA_FILE)
    assert result.fingerprint == hashlib.sha256(lake.read_bytes(lake_file)).hexdigest()
    report = json.loads(lake.read_bytes(lake.location(result.report_url)))
    assert report["success"] is True
    assert lake.exists(lake.location(result.docs_url))
    assert result.as_dict()["day"] == "2026-01-05"


def test_a_task_log_shows_the_projects_lines_and_no_gx_chatter(
    mlops_home: Path, caplog: pytest.LogCaptureFixture
):
    _drop("labels", DAY)
    with caplog.at_level(logging.INFO):
        ingest_day("labels", DAY)
    assert not [
        r for r in caplog.records if r.name.startswith("great_expectations") and r.levelno < logging.WARNING
    ]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("include.mlops.ingest")]
    assert ours[0].startswith("validated labels of 2026-01-05:") and ours[-1].startswith(
        "landed labels of 2026-01-05"
    )


def test_csv_and_parquet_drops_of_a_day_land_the_same_bytes(mlops_home: Path):
    _drop("transactions", DAY, "parquet")
    from_parquet = ingest_day("transactions", DAY).fingerprint
    _drop("transactions", DAY, "csv")
    assert ingest_day("transactions", DAY).fingerprint == from_parquet


def test_the_row_order_of_a_drop_does_not_change_the_lake_file(mlops_home: Path):
    table = good_table("transactions", DAY)
    _drop("transactions", DAY, table=table)
    in_order = ingest_day("transactions", DAY).fingerprint
    _drop("transactions", DAY, table=table.take(pa.array(range(table.num_rows - 1, -1, -1))))
    assert ingest_day("transactions", DAY).fingerprint == in_order


def test_labels_land(mlops_home: Path):
    _drop("labels", DAY)
    result = ingest_day("labels", DAY)
    assert result.rows == good_table("labels", DAY).num_rows
    assert _lake_table("labels", DAY).schema == LABELS.arrow_schema


def test_a_drop_in_several_files_lands_as_one_partition(mlops_home: Path):
    table = good_table("transactions", DAY)
    folder = lake.location(partition_url("landing", "transactions", DAY))
    half = table.num_rows // 2
    lake.write_parquet(folder.join("part-00000.parquet"), table.slice(0, half))
    lake.write_parquet(folder.join("part-00001.parquet"), table.slice(half))
    lake.write_bytes(folder.join("_SUCCESS"), b"")

    assert ingest_day("transactions", DAY).rows == table.num_rows
    assert _lake_table("transactions", DAY).num_rows == table.num_rows


def test_backfill_twice_leaves_identical_partitions_and_one_copy_of_each_day(mlops_home: Path):
    days = [DAY + dt.timedelta(days=i) for i in range(5)]
    for day in days:
        _drop("transactions", day)

    first = {day: ingest_day("transactions", day).fingerprint for day in days}
    lake_after_first = _files(f"{_settings().lake_url}/transactions")
    second = {day: ingest_day("transactions", day).fingerprint for day in days}

    assert second == first
    assert _files(f"{_settings().lake_url}/transactions") == lake_after_first
    assert sorted(lake_after_first) == [f"dt={d.isoformat()}/{lake.DATA_FILE}" for d in days]
    for day in days:
        landed = _lake_table("transactions", day)
        assert landed.num_rows == good_table("transactions", day).num_rows
        assert pc.count_distinct(landed["transaction_id"]).as_py() == landed.num_rows


def test_a_rerun_replaces_the_partition_and_removes_stale_files(mlops_home: Path):
    _drop("transactions", DAY)
    first = ingest_day("transactions", DAY)
    base = lake.location(first.partition_url)
    lake.write_parquet(base.join("part-00001.parquet"), good_table("transactions", DAY))

    second = ingest_day("transactions", DAY)

    assert [f.path.rsplit("/", 1)[-1] for f in lake.list_files(base)] == [lake.DATA_FILE]
    assert second.fingerprint == first.fingerprint
    assert _lake_table("transactions", DAY).num_rows == first.rows


# --- bad drops -----------------------------------------------------------------------------------


def test_the_corpus_holds_at_least_twelve_distinct_bad_drops():
    assert len({bad.name for bad in CORPUS}) == len(CORPUS) >= 12


@pytest.mark.parametrize("bad", CORPUS, ids=[bad.name for bad in CORPUS])
def test_a_bad_drop_is_quarantined_and_never_reaches_the_lake(mlops_home: Path, bad: BadDrop):
    s = _settings()
    if bad.needs_history:
        _seed_lake(bad.dataset, [DAY - dt.timedelta(days=i) for i in range(1, 4)])
    bad.write(s.landing_url, DAY)
    landing_url = partition_url("landing", bad.dataset, DAY)
    landing_before = _files(landing_url)

    with pytest.raises(DropRejected) as caught:
        ingest_day(bad.dataset, DAY)

    error = caught.value
    message = str(error)
    for pattern in bad.expect:
        assert sum(_matches(p, pattern) for p in error.problems) == 1, f"{pattern!r} not in:\n{message}"
    assert len(error.problems) == len(bad.expect), message
    assert f"{bad.dataset} drop of 2026-01-05 rejected" in message
    assert landing_url in message and "rerun 2026-01-05" in message
    assert "Nothing of 2026-01-05 is in the lake." in message

    assert not lake.exists(lake.location(partition_url("lake", bad.dataset, DAY)))
    quarantine = lake.location(partition_url("quarantine", bad.dataset, DAY))
    assert error.report_url == quarantine.join(REJECTION_NAME).url
    assert error.report_url in message
    rejection = json.loads(lake.read_bytes(quarantine.join(REJECTION_NAME)))
    assert rejection["message"] == message
    if rejection["reason"] == "invalid":
        assert json.loads(lake.read_bytes(quarantine.join("validation.json")))["success"] is False
        assert lake.exists(quarantine.join("docs", "index.html"))
    assert _files(landing_url) == landing_before
    assert not lake.exists(lake.location(partition_url("reports", bad.dataset, DAY)))


def test_a_bad_rerun_keeps_the_partition_landed_earlier(mlops_home: Path):
    _drop("transactions", DAY)
    landed = ingest_day("transactions", DAY)
    lake_before = _files(landed.partition_url)
    broken = with_values(good_table("transactions", DAY), "amount", {0: -1.0})
    _drop("transactions", DAY, table=broken)

    with pytest.raises(DropRejected, match="keeps the partition landed earlier"):
        ingest_day("transactions", DAY)

    assert _files(landed.partition_url) == lake_before


def test_a_rejected_day_leaves_no_partition_even_from_leftover_files(mlops_home: Path):
    base = lake.location(partition_url("lake", "transactions", DAY))
    lake.write_parquet(base.join("part-00007.parquet"), good_table("transactions", DAY))
    _drop("transactions", DAY, table=good_table("transactions", DAY).drop_columns(["channel"]))

    with pytest.raises(DropRejected, match="Nothing of 2026-01-05 is in the lake"):
        ingest_day("transactions", DAY)

    assert not lake.exists(base)


def test_a_fixed_drop_lands_on_rerun_and_clears_its_quarantine(mlops_home: Path):
    broken = with_values(good_table("transactions", DAY), "currency", {0: "ZZZ"})
    _drop("transactions", DAY, table=broken)
    with pytest.raises(DropRejected):
        ingest_day("transactions", DAY)
    quarantine = lake.location(partition_url("quarantine", "transactions", DAY))
    assert lake.exists(quarantine.join(REJECTION_NAME))

    _drop("transactions", DAY)
    result = ingest_day("transactions", DAY)

    assert result.rows == good_table("transactions", DAY).num_rows
    assert not lake.exists(quarantine)


def test_a_day_is_settled_once_validated_either_way(mlops_home: Path):
    # What materialize_features waits for before it counts a day's labels.
    assert settled("labels", DAY) is None
    _drop("labels", DAY, table=with_values(good_table("labels", DAY), "is_fraud", {0: None}))
    with pytest.raises(DropRejected):
        ingest_day("labels", DAY)
    assert settled("labels", DAY) == "quarantine"
    _drop("labels", DAY)
    ingest_day("labels", DAY)
    assert settled("labels", DAY) == "lake"


def test_other_days_go_on_after_a_bad_one(mlops_home: Path):
    days = [DAY + dt.timedelta(days=i) for i in range(3)]
    for day in days:
        _drop("transactions", day)
    _drop(
        "transactions",
        days[1],
        table=with_values(good_table("transactions", days[1]), "customer_id", {0: None}),
    )

    outcomes = {}
    for day in days:
        try:
            outcomes[day] = ingest_day("transactions", day).rows
        except DropRejected:
            outcomes[day] = "rejected"

    assert outcomes[days[1]] == "rejected"
    assert outcomes[days[0]] == good_table("transactions", days[0]).num_rows
    assert outcomes[days[2]] == good_table("transactions", days[2]).num_rows
    assert not lake.exists(lake.location(partition_url("lake", "transactions", days[1])))


# --- S3 ------------------------------------------------------------------------------------------


def test_landing_lake_quarantine_and_reports_all_on_s3(s3_bucket: str, monkeypatch: pytest.MonkeyPatch):
    for name in ("landing", "lake", "quarantine", "reports"):
        monkeypatch.setenv(f"MLOPS_{name.upper()}_URL", f"s3://{s3_bucket}/{name}")
    settings_module.settings.cache_clear()
    try:
        good, bad = DAY, DAY + dt.timedelta(days=1)
        _drop("transactions", good)
        _drop("transactions", bad, table=with_values(good_table("transactions", bad), "amount", {0: -3.0}))

        result = ingest_day("transactions", good)
        with pytest.raises(DropRejected) as caught:
            ingest_day("transactions", bad)

        assert result.partition_url == f"s3://{s3_bucket}/lake/transactions/dt=2026-01-05"
        assert _lake_table("transactions", good).num_rows == good_table("transactions", good).num_rows
        assert result.report_url.startswith(
            f"s3://{s3_bucket}/reports/validation/transactions/dt=2026-01-05/"
        )
        assert lake.exists(lake.location(result.docs_url))
        assert (
            caught.value.report_url
            == f"s3://{s3_bucket}/quarantine/transactions/dt=2026-01-06/{REJECTION_NAME}"
        )
        quarantined = _files(f"s3://{s3_bucket}/quarantine/transactions/dt=2026-01-06")
        assert {REJECTION_NAME, "validation.json", "docs/index.html"} <= set(quarantined)
        assert not lake.exists(lake.location(partition_url("lake", "transactions", bad)))
        assert recent_row_counts("transactions", bad) == [result.rows]
    finally:
        settings_module.settings.cache_clear()
