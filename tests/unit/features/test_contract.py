"""The feature contract: which columns exist, which the model gets, and when a snapshot is valid."""

from __future__ import annotations

import datetime as dt
import fnmatch

import pyarrow as pa

from include.mlops import features as F
from include.mlops.core.settings import load_settings


def test_snapshot_of_a_day_is_stamped_at_the_end_of_that_day_in_utc() -> None:
    day = dt.date(2024, 2, 29)
    assert F.day_start(day) == dt.datetime(2024, 2, 29, tzinfo=dt.UTC)
    assert F.snapshot_timestamp(day) == dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    # A payment on the next day is at or after the snapshot: it sees it; one of the day itself does not.
    assert F.snapshot_timestamp(day) > dt.datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=dt.UTC)


def test_every_windowed_statistic_has_one_column_per_window() -> None:
    names = [name for name, _ in F.CUSTOMER_FEATURES]
    for stat, _ in F.CUSTOMER_WINDOWED:
        assert [n for n in names if n.startswith(f"customer_{stat}_")] == [
            f"customer_{stat}_{w}d" for w in F.WINDOWS_DAYS
        ]
    assert len(F.MERCHANT_FEATURES) == len(F.MERCHANT_WINDOWED) * len(F.WINDOWS_DAYS)
    assert F.HISTORY_DAYS == 30


def test_the_model_gets_every_numeric_feature_and_not_the_home_country() -> None:
    assert "customer_home_country" not in F.FEATURE_COLUMNS
    assert len(F.FEATURE_COLUMNS) == len(set(F.FEATURE_COLUMNS))
    every = [
        *F.CUSTOMER_FEATURES,
        *F.MERCHANT_FEATURES,
        *F.TRANSACTION_FEATURES,
        *F.CUSTOMER_TRANSACTION_FEATURES,
        *F.MERCHANT_TRANSACTION_FEATURES,
    ]
    assert list(F.FEATURE_COLUMNS) == [name for name, t in every if t != pa.string()]


def test_snapshot_files_start_with_the_key_and_the_timestamp() -> None:
    for schema, key, features in (
        (F.CUSTOMER_SNAPSHOT_SCHEMA, "customer_id", F.CUSTOMER_FEATURES),
        (F.MERCHANT_SNAPSHOT_SCHEMA, "merchant_id", F.MERCHANT_FEATURES),
    ):
        assert schema.names == [key, "event_timestamp", *(name for name, _ in features)]
        assert not schema.field(key).nullable and not schema.field("event_timestamp").nullable
        assert all(schema.field(name).nullable for name, _ in features)


def test_feast_reads_every_days_snapshot_and_never_a_file_being_written(tmp_path) -> None:
    s = load_settings({"MLOPS_HOME": str(tmp_path)})
    day = dt.date(2026, 1, 5)
    written = F.snapshot_location("customer", day, s)
    pattern = F.snapshot_glob(s.lake_url, "customer")
    assert fnmatch.fnmatch(written.path, pattern)
    folder = written.path.rsplit("/", 1)[0]
    assert not fnmatch.fnmatch(f"{folder}/.tmp-0123-part-00000.parquet", pattern)
    assert not fnmatch.fnmatch(F.snapshot_location("merchant", day, s).path, pattern)
