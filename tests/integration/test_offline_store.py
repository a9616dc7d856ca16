"""The windowed offline store over a real lake: Feast's own DuckDB store returns the same rows at
every edge of the window (the store joins by ``ASOF JOIN``, :mod:`include.mlops.features.asof`),
and a query never opens the days outside it.

The stock store is built from a copy of the project's yaml whose ``offline_store: type:`` is
Feast's ``duckdb`` (:func:`stock_settings`, which also makes the online store and the engine
Feast's own: retrieval never uses them).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from include.mlops import features as F
from include.mlops import lake
from include.mlops.core.schema import TRANSACTIONS
from tests.integration.test_features import at, build, settings_for, simulate_lake
from tests.integration.test_online_stores import stock_settings

if TYPE_CHECKING:
    from pathlib import Path

    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration

MICROSECOND = dt.timedelta(microseconds=1)


def offline_store_name(s: Settings) -> str:
    return type(F.feature_store(s)._get_provider().offline_store).__name__


def payments_of(s: Settings, day: dt.date, rows: int) -> pd.DataFrame:
    """The first ``rows`` payments of ``day`` in the lake, as scoring reads them."""
    table = lake.read_table(lake.partition("lake", TRANSACTIONS.name, day, s))
    return table.slice(0, rows).to_pandas()


def at_time(frame: pd.DataFrame, when: dt.datetime) -> pd.DataFrame:
    """``frame``'s payments moved to ``when``: one window edge for every customer and merchant."""
    return frame.assign(event_timestamp=pd.Timestamp(when))


def test_the_windowed_store_returns_feasts_rows_at_every_edge_of_the_window(mlops_home: Path) -> None:
    ours = settings_for(mlops_home)
    days = simulate_lake(ours, 5)
    build(ours, days, materialize=False)
    stock = stock_settings(mlops_home, "sqlite")
    assert offline_store_name(ours) == "WindowedDuckDBOfflineStore"
    assert offline_store_name(stock) == "DuckDBOfflineStore"

    sample = payments_of(ours, days[3], 300)
    last_snapshot = F.snapshot_timestamp(days[-1])
    cases = {
        "a day's payments": pd.concat([sample, payments_of(ours, days[4], 300)], ignore_index=True),
        "before the first snapshot": at_time(sample, F.snapshot_timestamp(days[0]) - MICROSECOND),
        "at the first snapshot": at_time(sample, F.snapshot_timestamp(days[0])),
        "at a middle snapshot": at_time(sample, F.snapshot_timestamp(days[2])),
        "the last instant of the TTL": at_time(sample, last_snapshot + F.SNAPSHOT_TTL),
        "just past the TTL": at_time(sample, last_snapshot + F.SNAPSHOT_TTL + MICROSECOND),
        "naive timestamps, read as UTC": at_time(sample, at(days[3], 12).replace(tzinfo=None)),
        "no rows": sample.iloc[:0],
        "payments repeated": pd.concat([sample.head(50), sample.head(50)], ignore_index=True),
        "a customer and a merchant never seen": sample.head(20).assign(customer_id="c?", merchant_id="m?"),
    }
    filled = {}
    for case, entity in cases.items():
        expected = F.training_frame(entity, stock)
        got = F.training_frame(entity, ours)
        pd.testing.assert_frame_equal(got, expected, obj=case)
        filled[case] = int(got["customer_txn_count_30d"].notna().sum()) if len(got) else 0
    # The edges are edges: rows on the inside get a snapshot, rows outside get none.
    assert filled["before the first snapshot"] == filled["just past the TTL"] == 0
    for case in ("a day's payments", "at the first snapshot", "the last instant of the TTL"):
        assert filled[case] > 0, case


def memtable_views() -> list[str]:
    """The in-memory tables ibis has registered with its default DuckDB connection."""
    import ibis

    views = ibis.get_backend().raw_sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    return [name for (name,) in views if "memtable" in name]


def test_a_retrieval_lets_go_of_its_entity_rows_and_can_run_again(mlops_home: Path) -> None:
    import ibis

    s = settings_for(mlops_home)
    days = simulate_lake(s, 3)
    build(s, days, materialize=False)
    entity = payments_of(s, days[2], 200)
    before = memtable_views()
    for _ in range(3):
        F.training_frame(entity, s)
    assert memtable_views() == before  # ibis alone keeps each chunk's rows until the process exits

    store = F.feature_store(s)
    request = entity[[*F.ENTITY_KEYS, *F.REQUEST_FIELDS]]
    job = store.get_historical_features(
        entity_df=request, features=store.get_feature_service(F.FEATURE_SERVICE_NAME)
    )
    assert "ASOF LEFT JOIN" in ibis.to_sql(job.table)  # the store's own join (features.asof)
    first = job.to_df()
    assert memtable_views() == before
    pd.testing.assert_frame_equal(job.to_df(), first)  # registered again for the second run
    assert first["customer_txn_count_30d"].notna().sum() > 0


def test_a_query_never_opens_the_days_outside_its_window(mlops_home: Path) -> None:
    ours = settings_for(mlops_home)
    days = simulate_lake(ours, 4)
    build(ours, days, materialize=False)
    # A file no reader can parse, in a customer snapshot partition a week after the last day.
    later = days[-1] + dt.timedelta(days=7)
    junk = lake.partition("lake", lake.feature_snapshots("customer"), later, ours).join(lake.DATA_FILE)
    lake.write_bytes(junk, b"not a parquet file")
    entity = payments_of(ours, days[2], 200)

    with pytest.raises(Exception, match=f"dt={later}"):
        F.training_frame(entity, stock_settings(mlops_home, "sqlite"))  # stock DuckDB opens every day

    got = F.training_frame(entity, ours)
    assert got["customer_txn_count_30d"].notna().sum() > 0
    for day in days:  # materialization reads its day's window only, too
        F.materialize_day(day, ours)
    lake.delete(junk)
    pd.testing.assert_frame_equal(got, F.training_frame(entity, stock_settings(mlops_home, "sqlite")))
