"""Features end to end: lake -> daily snapshots -> Feast offline and online stores.

The leakage tests build a tiny history by hand, where any use of a later event (or of the same
day's events) changes an exact expected value. The other tests use the simulator's days.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse, urlunparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.devtools.simulator import SimulationConfig, labels_for_day, transactions_for_day
from include.mlops import features as F
from include.mlops import lake
from include.mlops.core.schema import LABELS, TRANSACTIONS
from include.mlops.core.settings import PROJECT_ROOT, load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration

UTC = dt.UTC
SIM = SimulationConfig(seed=7, rows_per_day=2000)
SIM_START = dt.date(2024, 3, 1)


# --------------------------------------------------------------------------------------------------
# Helpers


def settings_for(home: Path, **extra: str) -> Settings:
    return load_settings({"MLOPS_HOME": str(home), **extra})


def write_day(s: Settings, dataset: str, day: dt.date, table: pa.Table) -> None:
    loc = lake.location(s.lake_url).join(dataset, f"dt={day.isoformat()}", "part-00000.parquet")
    lake.write_parquet(loc, table)


def at(day: dt.date, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute, second, micro), tzinfo=UTC)


def payments(rows: list[tuple]) -> pa.Table:
    """(id, time, customer, merchant, amount, country, channel) -> a transactions table."""
    return pa.Table.from_pylist(
        [
            {
                "transaction_id": tid,
                "event_timestamp": ts,
                "customer_id": customer,
                "merchant_id": merchant,
                "amount": amount,
                "currency": "EUR",
                "country": country,
                "merchant_category": "grocery",
                "channel": channel,
                "card_present": channel != "online",
                "card_country": "DE",
            }
            for tid, ts, customer, merchant, amount, country, channel in rows
        ],
        schema=TRANSACTIONS.arrow_schema,
    )


def labels(rows: list[tuple]) -> pa.Table:
    """(transaction id, is_fraud, reported_at) -> a labels table."""
    return pa.Table.from_pylist(
        [{"transaction_id": t, "is_fraud": f, "reported_at": r} for t, f, r in rows],
        schema=LABELS.arrow_schema,
    )


def snapshot(s: Settings, view: str, day: dt.date) -> dict[str, dict]:
    loc = F.snapshot_location(view, day, s)
    table = pq.read_table(loc.path, filesystem=loc.fs)
    key = f"{view}_id"
    return {row[key]: row for row in table.to_pylist()}


def simulate_lake(s: Settings, days: int) -> list[dt.date]:
    out = [SIM_START + dt.timedelta(days=i) for i in range(days)]
    for day in out:
        write_day(s, "transactions", day, transactions_for_day(day, SIM))
        write_day(s, "labels", day, labels_for_day(day, SIM))
    return out


def build(s: Settings, days: list[dt.date], materialize: bool = True) -> None:
    F.apply_definitions(s)
    for day in days:
        F.compute_features_for_day(day, s)
        if materialize:
            F.materialize_day(day, s)


def partition_bytes(s: Settings) -> dict[str, bytes]:
    """Every snapshot file of the lake, by path relative to the lake."""
    base = lake.location(s.lake_url)
    out = {}
    for view in ("customer", "merchant"):
        folder = base.join("features", view)
        for info in folder.fs.get_file_info(pa.fs.FileSelector(folder.path, recursive=True)):
            if info.is_file:
                out[info.path[len(base.path) :]] = lake.read_bytes(lake.Location(base.fs, info.path, ""))
    return out


def online_view_values(s: Settings, customers: list[str], merchants: list[str]) -> pd.DataFrame:
    """The raw snapshot values the online store holds for these entities (no request needed)."""
    store = F.feature_store(s)
    customer_refs = [f"{F.CUSTOMER_VIEW}:{name}" for name, _ in F.CUSTOMER_FEATURES]
    merchant_refs = [f"{F.MERCHANT_VIEW}:{name}" for name, _ in F.MERCHANT_FEATURES]
    c = store.get_online_features(customer_refs, [{"customer_id": x} for x in customers]).to_df()
    m = store.get_online_features(merchant_refs, [{"merchant_id": x} for x in merchants]).to_df()
    return pd.concat([c.reset_index(drop=True), m.reset_index(drop=True)], axis=1)


def same(a: object, b: object) -> bool:
    """Equal, with null == null (None, NaN, NA) and floats within a tight relative tolerance."""
    a_null = a is None or a is pd.NA or (isinstance(a, float) and math.isnan(a))
    b_null = b is None or b is pd.NA or (isinstance(b, float) and math.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    if isinstance(a, int | float | np.integer | np.floating) and isinstance(
        b, int | float | np.integer | np.floating
    ):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def mismatches(left: pd.DataFrame, right: pd.DataFrame, columns: list[str]) -> list[str]:
    assert len(left) == len(right)
    out = []
    for i in range(len(left)):
        for column in columns:
            a, b = left[column].iloc[i], right[column].iloc[i]
            if not same(a, b):
                out.append(f"row {i} {column}: {a!r} != {b!r}")
    return out


# --------------------------------------------------------------------------------------------------
# Leakage: a history built by hand

D0, D1, D2 = dt.date(2024, 1, 10), dt.date(2024, 1, 11), dt.date(2024, 1, 12)


def hand_lake(s: Settings) -> None:
    write_day(
        s,
        "transactions",
        D0,
        payments(
            [
                ("t1", at(D0, 10), "c1", "m1", 10.00, "DE", "pos"),
                ("t2", at(D0, 2), "c1", "m2", 30.00, "FR", "online"),
                # The last microsecond of D0 belongs to D0's snapshot.
                ("t3", at(D0, 23, 59, 59, 999_999), "c2", "m1", 4.00, "DE", "online"),
            ]
        ),
    )
    write_day(
        s,
        "transactions",
        D1,
        payments(
            [
                # The first microsecond of D1 must not reach D0's snapshot.
                ("t4", at(D1), "c1", "m1", 1000.00, "DE", "pos"),
                ("t5", at(D1, 12), "c2", "m2", 50.00, "FR", "pos"),
            ]
        ),
    )
    write_day(
        s,
        "labels",
        D1,
        labels(
            [
                ("t1", 1, at(D1, 8)),  # known from D1 08:00: D1's snapshot, never D0's
                ("t2", 1, at(D1, 23, 59, 59, 999_999)),
            ]
        ),
    )


def add_later_days(s: Settings) -> None:
    """Events after D1 (and a label of an old payment): none may change D0's or D1's snapshot."""
    write_day(s, "transactions", D2, payments([("t6", at(D2, 9), "c1", "m1", 20.00, "DE", "pos")]))
    write_day(s, "labels", D2, labels([("t3", 0, at(D2, 10))]))


def test_snapshots_aggregate_only_days_strictly_before_their_timestamp(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    hand_lake(s)
    F.compute_features_for_day(D0, s)
    F.compute_features_for_day(D1, s)

    c0 = snapshot(s, "customer", D0)
    assert set(c0) == {"c1", "c2"}
    c1 = c0["c1"]
    assert c1["event_timestamp"] == at(D1)
    assert c1["customer_txn_count_1d"] == 2
    assert c1["customer_txn_count_30d"] == 2
    assert c1["customer_amount_sum_1d"] == 40.0
    assert c1["customer_amount_mean_1d"] == 20.0
    assert c1["customer_amount_std_1d"] == 10.0
    assert c1["customer_distinct_merchants_1d"] == 2
    assert c1["customer_home_country"] == "DE"  # DE and FR once each: ties go by name
    assert c1["customer_foreign_share_1d"] == 0.5
    assert c1["customer_night_share_1d"] == 0.5
    assert c1["customer_online_share_1d"] == 0.5
    assert c1["customer_small_amount_count_1d"] == 0
    c2 = c0["c2"]
    assert c2["customer_txn_count_1d"] == 1
    assert c2["customer_amount_std_1d"] == 0.0
    assert c2["customer_night_share_1d"] == 0.0
    assert c2["customer_small_amount_count_1d"] == 1

    m0 = snapshot(s, "merchant", D0)
    assert m0["m1"]["merchant_txn_count_1d"] == 2
    assert m0["m1"]["merchant_amount_mean_1d"] == 7.0
    # t1's chargeback is reported on D1: unknown at the end of D0.
    assert m0["m1"]["merchant_labelled_count_30d"] == 0
    assert m0["m1"]["merchant_fraud_rate_30d"] is None

    c1_d1 = snapshot(s, "customer", D1)["c1"]
    assert c1_d1["customer_txn_count_1d"] == 1
    assert c1_d1["customer_amount_sum_1d"] == 1000.0
    assert c1_d1["customer_txn_count_7d"] == 3
    assert c1_d1["customer_amount_mean_7d"] == pytest.approx(1040 / 3, rel=1e-12)
    assert c1_d1["customer_amount_std_7d"] == pytest.approx(float(np.std([10.0, 30.0, 1000.0])), rel=1e-12)
    assert c1_d1["customer_night_share_1d"] == 1.0  # 00:00:00 is night
    assert c1_d1["customer_night_share_7d"] == pytest.approx(2 / 3, rel=1e-12)
    assert c1_d1["customer_foreign_share_7d"] == pytest.approx(1 / 3, rel=1e-12)
    m1 = snapshot(s, "merchant", D1)
    assert m1["m1"]["merchant_labelled_count_1d"] == 1
    assert m1["m1"]["merchant_fraud_rate_1d"] == 1.0
    assert m1["m2"]["merchant_labelled_count_1d"] == 1  # reported in D1's last microsecond
    assert m1["m2"]["merchant_fraud_rate_7d"] == 1.0

    # Later events and labels land, the days are recomputed: not one byte may change.
    before = partition_bytes(s)
    add_later_days(s)
    F.compute_features_for_day(D0, s)
    F.compute_features_for_day(D1, s)
    after = partition_bytes(s)
    assert after == before

    F.compute_features_for_day(D2, s)
    m2 = snapshot(s, "merchant", D2)["m1"]
    assert (m2["merchant_labelled_count_1d"], m2["merchant_fraud_rate_1d"]) == (1, 0.0)
    assert (m2["merchant_labelled_count_7d"], m2["merchant_fraud_rate_7d"]) == (2, 0.5)


def test_point_in_time_join_uses_the_previous_days_snapshot_only(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    hand_lake(s)
    add_later_days(s)
    build(s, [D0, D1, D2], materialize=False)

    def row(tid: str, ts: dt.datetime, customer: str, merchant: str, amount: float) -> dict:
        return {
            "transaction_id": tid,
            "event_timestamp": ts,
            "customer_id": customer,
            "merchant_id": merchant,
            "amount": amount,
            "country": "DE",
            "channel": "pos",
            "card_present": True,
        }

    entity = pd.DataFrame(
        [
            row("same-day", at(D0, 23, 59, 59, 999_999), "c1", "m1", 5.0),  # nothing before D0
            row("t4", at(D1), "c1", "m1", 1000.0),  # exactly at D0's snapshot: sees D0, not itself
            row("after-label", at(D1, 12), "c1", "m1", 10.0),  # t1's label (D1 08:00) not yet counted
            row("t6", at(D2, 9), "c1", "m1", 20.0),  # sees D1: t4 is in the 1-day window
            row("stale", at(D2 + dt.timedelta(days=3), 1), "c1", "m1", 20.0),  # past the 2-day TTL
        ]
    )
    out = F.training_frame(entity, s).set_index("transaction_id")

    snapshot_columns = [n for n, _ in (*F.CUSTOMER_FEATURES, *F.MERCHANT_FEATURES) if n in F.FEATURE_COLUMNS]
    assert out.loc["same-day", snapshot_columns].isna().all()
    assert out.loc["t4", "customer_txn_count_1d"] == 2
    assert out.loc["t4", "customer_amount_sum_1d"] == 40.0
    assert out.loc["t4", "amount_to_customer_mean_30d"] == pytest.approx(1000.0 / 20.0, rel=1e-12)
    assert out.loc["t4", "amount_zscore_30d"] == pytest.approx((1000.0 - 20.0) / 10.0, rel=1e-12)
    assert out.loc["after-label", "merchant_labelled_count_30d"] == 0
    assert pd.isna(out.loc["after-label", "merchant_fraud_rate_30d"])
    assert out.loc["t6", "customer_txn_count_1d"] == 1
    assert out.loc["t6", "customer_amount_sum_1d"] == 1000.0
    assert out.loc["t6", "merchant_fraud_rate_1d"] == 1.0
    assert pd.isna(out.loc["stale", "customer_txn_count_1d"])
    assert out.loc["t4", "is_night"] == 1 and out.loc["t6", "is_night"] == 0
    assert out.loc["t6", "is_foreign_country"] == 0.0


def test_customer_leaving_the_30_day_window_gets_a_null_row(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    first = dt.date(2024, 2, 1)
    last_in_window = first + dt.timedelta(days=29)
    gone = first + dt.timedelta(days=30)
    write_day(s, "transactions", first, payments([("a1", at(first, 12), "c9", "m1", 12.5, "DE", "pos")]))
    for day in (last_in_window, gone):
        write_day(
            s, "transactions", day, payments([(f"b{day:%d}", at(day, 12), "c1", "m1", 1.0, "DE", "pos")])
        )

    # Computed out of order and without the summaries of the days between: built on the way.
    result = F.compute_features_for_day(gone, s)
    assert "transactions:2024-02-01" in result["summaries_built"]
    F.compute_features_for_day(last_in_window, s)

    kept = snapshot(s, "customer", last_in_window)["c9"]
    assert (kept["customer_txn_count_30d"], kept["customer_txn_count_7d"]) == (1, 0)
    assert kept["customer_amount_mean_30d"] == 12.5
    assert kept["customer_amount_mean_7d"] is None
    tombstone = snapshot(s, "customer", gone)["c9"]
    assert all(tombstone[name] is None for name, _ in F.CUSTOMER_FEATURES)
    assert snapshot(s, "merchant", gone)["m1"]["merchant_txn_count_30d"] == 2


def test_a_day_without_transactions_in_the_lake_is_an_error(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    with pytest.raises(FileNotFoundError, match="ingest that day first"):
        F.compute_features_for_day(D0, s)


# --------------------------------------------------------------------------------------------------
# Simulated days: retrieval, parity, reruns


def test_apply_is_idempotent_and_the_service_serves_the_model_columns(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    first = F.apply_definitions(s)
    second = F.apply_definitions(s)
    assert first["feature_services"] == second["feature_services"] == [F.FEATURE_SERVICE_NAME]
    assert second["deleted"] == []
    store = F.feature_store(s)
    service = store.get_feature_service(F.FEATURE_SERVICE_NAME)
    served = [f.name for projection in service.feature_view_projections for f in projection.features]
    assert served == list(F.FEATURE_COLUMNS)
    source = store.get_feature_view(F.CUSTOMER_VIEW).batch_source
    assert source.path == F.snapshot_glob(s.lake_url, "customer")
    assert str(mlops_home) in s.feast_registry and not (s.feast_repo / "registry.db").exists()


def test_training_frame_returns_every_row_with_its_own_values(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    days = simulate_lake(s, 8)
    build(s, days, materialize=False)

    next_day = days[-1] + dt.timedelta(days=1)
    tx = transactions_for_day(next_day, SIM).to_pandas()
    # Rows sharing customer, merchant and timestamp (the file store dropped such rows), a customer
    # nobody knows, and payments exactly at the snapshot's timestamp.
    twins = tx.head(40).copy()
    twins["transaction_id"] += "-twin"
    twins["amount"] = twins["amount"] * 3 + 1
    stranger = tx.head(5).copy()
    stranger["transaction_id"] += "-stranger"
    stranger["customer_id"] = "nobody"
    exact = tx.head(5).copy()
    exact["transaction_id"] += "-exact"
    exact["event_timestamp"] = pd.Timestamp(F.day_start(next_day))
    entity = pd.concat([tx, twins, stranger, exact], ignore_index=True).sample(frac=1.0, random_state=3)
    entity = entity.reset_index(drop=True)

    out = F.training_frame(entity, s)

    assert len(out) == len(entity)
    assert out["transaction_id"].tolist() == entity["transaction_id"].tolist()
    assert out[list(F.FEATURE_COLUMNS)].columns.tolist() == list(F.FEATURE_COLUMNS)

    # An independent point-in-time join of the snapshot files (pandas merge_asof, 2-day TTL).
    customer = pd.concat(
        [pq.read_table(F.snapshot_location("customer", d, s).path).to_pandas() for d in days]
    ).sort_values("event_timestamp")
    probe = entity[["transaction_id", "customer_id", "event_timestamp", "amount"]].copy()
    probe["event_timestamp"] = pd.to_datetime(probe["event_timestamp"], utc=True).astype(
        customer["event_timestamp"].dtype
    )
    expected = pd.merge_asof(
        probe.sort_values("event_timestamp"),
        customer,
        on="event_timestamp",
        by="customer_id",
        tolerance=pd.Timedelta(F.SNAPSHOT_TTL),
        allow_exact_matches=True,
    ).set_index("transaction_id")
    expected = expected.loc[out["transaction_id"]].reset_index()
    columns = [name for name, _ in F.CUSTOMER_FEATURES if name != "customer_home_country"]
    assert mismatches(out, expected, columns) == []
    assert out.loc[out["customer_id"] == "nobody", columns].isna().all().all()
    own = out["amount"] / out["customer_amount_mean_30d"]
    assert np.allclose(out["amount_to_customer_mean_30d"], own, rtol=1e-12, equal_nan=True)
    twin_rows = out[out["transaction_id"].str.endswith("-twin")]
    assert (twin_rows["amount_to_customer_mean_30d"] > 0).all()


def test_online_features_equal_historical_features_at_the_same_time(
    mlops_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings_for(mlops_home)
    days = simulate_lake(s, 8)
    with caplog.at_level(logging.INFO):
        build(s, days)
    # A task's log holds the project's lines, not Feast's refreshes of its registry cache.
    assert not [r for r in caplog.records if r.name.startswith("feast") and r.levelno < logging.WARNING]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("include.mlops.features")]
    assert [m for m in ours if m.startswith(f"features of {days[-1]}: ")]
    loaded = f"online store: loaded {F.CUSTOMER_VIEW}, {F.MERCHANT_VIEW} of {days[-1]}"
    assert [m for m in ours if m.startswith(loaded)]
    assert_online_matches_offline(s, days[-1])


def assert_online_matches_offline(s: Settings, last_day: dt.date, sample: int = 60) -> None:
    """Online features (after materializing ``last_day``) equal historical ones at the same instant."""
    customers = sorted(snapshot(s, "customer", last_day))
    merchants = sorted(snapshot(s, "merchant", last_day))
    rng = random.Random(11)
    when = F.snapshot_timestamp(last_day) + dt.timedelta(hours=7, minutes=13)
    rows = [
        {
            "transaction_id": f"probe-{i}",
            "customer_id": rng.choice([*customers, "nobody"]),
            "merchant_id": rng.choice([*merchants, "nowhere"]),
            "event_timestamp": when,
            "amount": round(rng.uniform(0.5, 400.0), 2),
            "country": rng.choice(["DE", "FR", "US", "NG"]),
            "channel": rng.choice(["pos", "online", "atm"]),
            "card_present": rng.random() < 0.6,
        }
        for i in range(sample)
    ]
    online = F.online_features(rows, s)
    offline = F.training_frame(pd.DataFrame(rows), s)
    assert online["transaction_id"].tolist() == offline["transaction_id"].tolist()
    assert mismatches(online, offline, list(F.FEATURE_COLUMNS)) == []
    known = online[online["customer_id"] != "nobody"]
    assert known["customer_txn_count_30d"].notna().all()


def test_rerun_and_backfill_leave_both_stores_unchanged(mlops_home: Path, tmp_path: Path) -> None:
    s = settings_for(mlops_home)
    days = simulate_lake(s, 8)
    build(s, days)
    files = partition_bytes(s)
    customers = sorted(snapshot(s, "customer", days[-1]))
    merchants = sorted(snapshot(s, "merchant", days[-1]))
    online = online_view_values(s, customers, merchants)
    assert len(files) == 2 * len(days)

    # Rerun the last day, then backfill an old one: the old day must not roll the online store back.
    F.compute_features_for_day(days[-1], s)
    assert F.materialize_day(days[-1], s)["materialized"] == [F.CUSTOMER_VIEW, F.MERCHANT_VIEW]
    F.compute_features_for_day(days[2], s)
    backfill = F.materialize_day(days[2], s)
    assert backfill["materialized"] == [] and set(backfill["skipped"]) == {F.CUSTOMER_VIEW, F.MERCHANT_VIEW}
    assert partition_bytes(s) == files
    assert mismatches(online_view_values(s, customers, merchants), online, list(online.columns)) == []

    # The same lake computed in reverse order from nothing gives the same bytes.
    other = settings_for(tmp_path / "other-home", MLOPS_LAKE_URL=str(tmp_path / "other-lake"))
    for day in days:
        for dataset in ("transactions", "labels"):
            src = lake.location(s.lake_url).join(dataset, f"dt={day.isoformat()}", "part-00000.parquet")
            write_day(other, dataset, day, pq.read_table(src.path))
    for day in reversed(days):
        F.compute_features_for_day(day, other)
    assert partition_bytes(other) == files


# --------------------------------------------------------------------------------------------------
# Embedded registry: crash safety

KILL_ROUNDS = 12
"""Processes killed (SIGKILL) at a random moment while they apply and materialize in a loop."""

_APPLY_AND_MATERIALIZE_FOREVER = """
import datetime as dt
import sys

from include.mlops import features as F

days = [dt.date.fromisoformat(d) for d in sys.argv[1:]]
F.quiet_feast_import()
import feast  # the import is paid for before the parent starts its clock

print("ready", flush=True)
while True:
    F.apply_definitions()
    print("applied", flush=True)
    for day in days:
        F.materialize_day(day)
        print("materialized", day, flush=True)
"""


def registry_state(s: Settings) -> tuple[set[str], set[str], set[tuple]] | None:
    """The registry's feature views, feature services and materialization intervals; ``None`` when
    there is no registry. The database is read as it is (a store refuses a missing one), by a
    connection that may write: the first one after a kill rolls the dead transaction back."""
    import sqlite3

    from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto

    path = Path(s.feast_registry)
    if not path.exists():
        return None
    assert path.stat().st_size > 0, "an empty registry file"
    with contextlib.closing(sqlite3.connect(path)) as db:
        views = {}
        for name, blob in db.execute("SELECT feature_view_name, feature_view_proto FROM feature_views"):
            views[name] = FeatureViewProto.FromString(blob)
        services = {r[0] for r in db.execute("SELECT feature_service_name FROM feature_services")}
    intervals = {
        (name, i.start_time.seconds, i.end_time.seconds)
        for name, proto in views.items()
        for i in proto.meta.materialization_intervals
    }
    return set(views), services, intervals


def _kill_at_random(s: Settings, days: list[dt.date], delay: float) -> list[str]:
    """Start the apply-and-materialize loop, SIGKILL it ``delay`` seconds after it is ready; returns
    the steps it reported as done."""
    env = {**os.environ, "MLOPS_HOME": str(s.home), "PYTHONPATH": str(PROJECT_ROOT)}
    args = [sys.executable, "-c", _APPLY_AND_MATERIALIZE_FOREVER, *(d.isoformat() for d in days)]
    child = subprocess.Popen(
        args, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        # Feast prints its progress too: only the loop's own steps are kept.
        return [line.strip() for line in child.stdout if line.startswith(("applied", "materialized"))]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_killed_apply_or_materialization_never_loses_the_registry(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    days = simulate_lake(s, 3)
    for day in days:
        F.compute_features_for_day(day, s)
    expected_views = {F.CUSTOMER_VIEW, F.MERCHANT_VIEW}
    rng = random.Random(5)
    seen: set[tuple] = set()
    outcomes = []
    for round_ in range(KILL_ROUNDS):
        # The first rounds are short, to kill the very first apply (the registry's creation).
        delay = rng.uniform(0.0, 0.8) if round_ < 3 else rng.uniform(0.0, 3.0)
        done = _kill_at_random(s, days, delay)
        state = registry_state(s)
        if state is None:
            # Killed while creating the registry: no registry at all, never an empty one.
            assert not any(step == "applied" for step in done), done
            outcomes.append("absent")
            continue
        views, services, intervals = state
        assert views == expected_views
        assert services == {F.FEATURE_SERVICE_NAME}
        # A committed materialization is never forgotten.
        assert seen <= intervals, seen - intervals
        assert {v.name for v in F.feature_store(s).list_feature_views()} == expected_views
        seen = intervals
        outcomes.append(f"complete after {done[-1] if done else 'nothing'}")
    assert any(o != "absent" for o in outcomes), outcomes
    # A rerun converges (after the deploy step, which a kill during the creation leaves undone):
    # every day's snapshot is served and every interval is recorded.
    F.apply_definitions(s)
    for day in days:
        F.materialize_day(day, s)
    views, _, intervals = registry_state(s) or (set(), set(), set())
    assert views == expected_views
    assert {(end - start) for _, start, end in intervals} == {24 * 3600 - 1}
    assert len(intervals) >= len(days) * len(expected_views)
    assert_online_matches_offline(s, days[-1], sample=20)
    # No staging file of a killed creation survives the creation that followed it.
    assert list(Path(s.feast_registry).parent.glob(".*.staging")) == []


def test_an_empty_registry_file_is_rebuilt_never_read_as_an_empty_registry(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    path = Path(s.feast_registry)
    path.parent.mkdir(parents=True)
    path.touch()
    with pytest.raises(F.FeaturesNotRegistered, match=F.DEPLOY_COMMAND):
        F.feature_store(s)
    F.apply_definitions(s)
    store = F.feature_store(s)
    assert {v.name for v in store.list_feature_views()} == {F.CUSTOMER_VIEW, F.MERCHANT_VIEW}
    assert path.stat().st_size > 0 and path.read_bytes().startswith(b"SQLite format 3\x00")


def test_a_registry_file_of_another_kind_is_named_not_overwritten(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    path = Path(s.feast_registry)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n\x0bcard_fraud protobuf")
    with pytest.raises(ValueError, match="is not a SQLite database"):
        F.feature_store(s)
    assert path.read_bytes() == b"\n\x0bcard_fraud protobuf"


# --------------------------------------------------------------------------------------------------
# Cluster profile: SQL registry on PostgreSQL, online store on Redis


@pytest.fixture
def feast_database(fresh_database: str) -> str:
    """A fresh PostgreSQL database for the Feast registry, dropped afterwards."""
    return fresh_database


@pytest.fixture
def redis_database(redis_url: str) -> Iterator[str]:
    """A Redis URL on an empty logical database of the server; the keys written are removed after."""
    import redis

    parsed = urlparse(redis_url)
    candidates = list(range(1, 16))
    random.shuffle(candidates)
    for db in candidates:
        client = redis.Redis(host=parsed.hostname, port=parsed.port or 6379, db=db)
        if client.dbsize() == 0:
            break
        client.close()
    else:
        pytest.skip("no empty Redis logical database to test in")
    try:
        yield urlunparse(parsed._replace(path=f"/{db}"))
    finally:
        leftover = [k for k in client.scan_iter() if k.endswith(F.PROJECT.encode())]
        if leftover:
            client.delete(*leftover)
        client.close()


def test_cluster_profile_on_postgres_registry_and_redis(
    mlops_home: Path, feast_database: str, redis_database: str
) -> None:
    import redis
    import sqlalchemy

    s = settings_for(
        mlops_home,
        MLOPS_PROFILE="cluster",
        MLOPS_FEAST_REGISTRY=feast_database,
        MLOPS_REDIS_URL=redis_database,
    )
    assert F.feature_store_yaml(s).name == "feature_store.cluster.yaml"
    days = simulate_lake(s, 6)
    build(s, days)
    assert F.apply_definitions(s)["deleted"] == []

    engine = sqlalchemy.create_engine(feast_database.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        names = {r[0] for r in conn.execute(sqlalchemy.text("SELECT feature_view_name FROM feature_views"))}
    engine.dispose()
    assert names == {F.CUSTOMER_VIEW, F.MERCHANT_VIEW}

    client = redis.Redis.from_url(redis_database)
    assert client.dbsize() == len(snapshot(s, "customer", days[-1])) + len(snapshot(s, "merchant", days[-1]))
    assert_online_matches_offline(s, days[-1], sample=40)

    # Rerun and backfill change nothing online.
    customers = sorted(snapshot(s, "customer", days[-1]))[:30]
    merchants = sorted(snapshot(s, "merchant", days[-1]))[:10]
    before = online_view_values(s, customers, merchants)
    F.materialize_day(days[-1], s)
    F.materialize_day(days[1], s)
    assert mismatches(online_view_values(s, customers, merchants), before, list(before.columns)) == []

    F.feature_store(s).teardown()
    assert not [k for k in client.scan_iter() if k.endswith(F.PROJECT.encode())]
    client.close()
