"""Customer and merchant features: computed from the lake, registered and served by Feast.

Point in time
=============
For each day ``D`` the job writes one *snapshot* per entity whose ``event_timestamp`` is the end of
that day (``D+1 00:00 UTC``). It aggregates only events strictly before that instant, over windows of
1, 7 and 30 days ending at it (days ``D``, ``D-6..D`` and ``D-29..D``). Feast's point-in-time join
gives a payment at time ``t`` the latest snapshot at or before ``t``: a payment on day ``E`` sees the
snapshot of ``E-1``, so it never sees its own day or anything later. Snapshots live for
:data:`SNAPSHOT_TTL` (two days): one missing day falls back to the day before, never further.

Merchant fraud rates count the labels *reported* inside the window (``reported_at`` strictly before
the snapshot), each attributed to the merchant of the labelled payment. A label reported later
changes later snapshots only.

An entity that drops out of the 30-day window gets one last row with every feature null (a
*tombstone*): otherwise the point-in-time join (within the TTL) and the online store would keep
serving its older, non-empty snapshot.

Incremental cost
================
Day ``D``'s work reads the lake partition of ``D`` once and writes small per-day summaries under
``<lake>/features/_daily/<version>/<kind>/dt=D/``: additive statistics per customer and country,
the distinct customer-merchant pairs (as 64-bit keys), per merchant, an index of which merchant
each payment went to, and the labels reported that day per merchant (attributed through the
indexes of ``D-5 .. D``). The snapshot of ``D`` then reads at most 31 summaries of each kind, so
the cost does not grow with the length of the history. A missing summary of an earlier day (a
backfill out of order) is built from its lake partition on the way.

Amounts are summed as integer cents, so sums are exact whatever order DuckDB's threads add them
in, and every output is sorted by key: a rerun writes byte-identical files.

Serving
=======
The definitions live in ``feature_repo/`` (entities, sources, views, the versioned feature
service); :func:`apply_definitions` registers them through the Python API, :func:`materialize_day`
loads exactly one day's snapshot interval into the online store, :func:`training_frame` and
:func:`online_features` read them back. The on-demand transformations (features of the payment
itself and relative to its snapshots) are plain functions here; the repository's
on-demand views call them.

pandas, DuckDB and Feast are imported inside the functions that need them (DAG files import this
module at parse time).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from include.mlops import lake
from include.mlops.core.schema import LABELS, MAX_LABEL_DELAY_DAYS, TIMESTAMP, TRANSACTIONS
from include.mlops.core.settings import settings as current_settings

if TYPE_CHECKING:
    import duckdb
    import feast
    import pandas as pd

    from include.mlops.core.settings import Settings

# --------------------------------------------------------------------------------------------------
# The feature contract (feature_repo/ derives its schemas from these names)

PROJECT = "card_fraud"
"""The Feast project (also in both ``feature_store*.yaml``)."""

FEATURE_SERVICE_NAME = "fraud_model_v1"
"""The versioned feature service the model is trained and served with."""

CUSTOMER_VIEW = "customer_daily_features"
MERCHANT_VIEW = "merchant_daily_features"

WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
HISTORY_DAYS = max(WINDOWS_DAYS)
SNAPSHOT_TTL = dt.timedelta(days=2)
"""How long a snapshot may serve a payment: the next day's snapshot, or one missing day."""

SMALL_AMOUNT = 5.0
"""Payments under this are the probes of card testing."""

NIGHT_END_HOUR = 6
"""Payments from 00:00 to 05:59 UTC count as night-time."""

REQUEST_FIELDS: tuple[str, ...] = ("event_timestamp", "amount", "country", "channel", "card_present")
"""Fields of the payment itself that the on-demand features need (names from the schema)."""

ENTITY_KEYS: tuple[str, ...] = ("customer_id", "merchant_id")

_CUSTOMER_WINDOWED: tuple[tuple[str, pa.DataType], ...] = (
    ("txn_count", pa.int64()),
    ("amount_sum", pa.float64()),
    ("amount_mean", pa.float64()),
    ("amount_std", pa.float64()),
    ("distinct_merchants", pa.int64()),
    ("foreign_share", pa.float64()),
    ("night_share", pa.float64()),
    ("online_share", pa.float64()),
)
_MERCHANT_WINDOWED: tuple[tuple[str, pa.DataType], ...] = (
    ("txn_count", pa.int64()),
    ("amount_mean", pa.float64()),
    ("labelled_count", pa.int64()),
    ("fraud_rate", pa.float64()),
)

CUSTOMER_FEATURES: tuple[tuple[str, pa.DataType], ...] = (
    *((f"customer_{name}_{w}d", t) for name, t in _CUSTOMER_WINDOWED for w in WINDOWS_DAYS),
    ("customer_small_amount_count_1d", pa.int64()),
    ("customer_home_country", pa.string()),
)
"""Columns of the customer snapshot (after ``customer_id`` and ``event_timestamp``)."""

MERCHANT_FEATURES: tuple[tuple[str, pa.DataType], ...] = tuple(
    (f"merchant_{name}_{w}d", t) for name, t in _MERCHANT_WINDOWED for w in WINDOWS_DAYS
)
"""Columns of the merchant snapshot (after ``merchant_id`` and ``event_timestamp``)."""

TRANSACTION_FEATURES: tuple[tuple[str, pa.DataType], ...] = (
    ("transaction_hour", pa.int64()),
    ("is_night", pa.int64()),
    ("is_online", pa.int64()),
    ("is_card_present", pa.int64()),
    ("is_small_amount", pa.int64()),
)
"""On-demand features of the payment alone."""

CUSTOMER_TRANSACTION_FEATURES: tuple[tuple[str, pa.DataType], ...] = (
    ("amount_to_customer_mean_7d", pa.float64()),
    ("amount_to_customer_mean_30d", pa.float64()),
    ("amount_zscore_30d", pa.float64()),
    ("is_foreign_country", pa.float64()),
)
"""On-demand features of the payment relative to its customer's snapshot (null without history)."""

MERCHANT_TRANSACTION_FEATURES: tuple[tuple[str, pa.DataType], ...] = (
    ("amount_to_merchant_mean_30d", pa.float64()),
)
"""On-demand features of the payment relative to its merchant's snapshot."""

# The customer's home country is an input of ``is_foreign_country``, not a model feature (a string).
_NOT_MODEL_FEATURES = frozenset({"customer_home_country"})

FEATURE_COLUMNS: tuple[str, ...] = tuple(
    name
    for name, _ in (
        *CUSTOMER_FEATURES,
        *MERCHANT_FEATURES,
        *TRANSACTION_FEATURES,
        *CUSTOMER_TRANSACTION_FEATURES,
        *MERCHANT_TRANSACTION_FEATURES,
    )
    if name not in _NOT_MODEL_FEATURES
)
"""The columns :data:`FEATURE_SERVICE_NAME` serves, in order: what the model is trained on."""


def _snapshot_schema(key: str, features: tuple[tuple[str, pa.DataType], ...]) -> pa.Schema:
    return pa.schema(
        [pa.field(key, pa.string(), nullable=False), pa.field("event_timestamp", TIMESTAMP, nullable=False)]
        + [pa.field(name, t) for name, t in features]
    )


CUSTOMER_SNAPSHOT_SCHEMA = _snapshot_schema("customer_id", CUSTOMER_FEATURES)
MERCHANT_SNAPSHOT_SCHEMA = _snapshot_schema("merchant_id", MERCHANT_FEATURES)

# Per-day summaries: additive statistics the windows are summed from. Amounts are integer cents so
# that sums are exact and the same whatever order DuckDB's threads add them in.
_SUMMARY_SCHEMAS: dict[str, pa.Schema] = {
    "customer_country": pa.schema(
        [
            ("customer_id", pa.string()),
            ("customer_key", pa.int64()),
            ("country", pa.string()),
            ("n", pa.int64()),
            ("cents", pa.int64()),
            ("cents_sq", pa.int64()),
            ("night_n", pa.int64()),
            ("online_n", pa.int64()),
            ("small_n", pa.int64()),
        ]
    ),
    # Distinct (customer, merchant) pairs as 64-bit keys: the 30-day distinct count groups tens of
    # millions of pairs, several times faster on integers than on strings.
    "customer_merchant": pa.schema([("customer_key", pa.int64()), ("merchant_key", pa.int64())]),
    "merchant": pa.schema([("merchant_id", pa.string()), ("n", pa.int64()), ("cents", pa.int64())]),
    "merchant_labels": pa.schema(
        [("merchant_id", pa.string()), ("labelled_n", pa.int64()), ("fraud_n", pa.int64())]
    ),
    # Which merchant each payment of the day went to, by payment key: labels arrive up to five days
    # later and are attributed through this small index instead of re-reading five lake partitions.
    "payments": pa.schema([("transaction_key", pa.int64()), ("merchant_id", pa.string())]),
}
_TRANSACTION_SUMMARIES = ("customer_country", "customer_merchant", "merchant", "payments")
_LABEL_SUMMARIES = ("merchant_labels",)
# In the summaries' path: a change of their format gets new folders, rebuilt from the lake on demand.
_SUMMARY_VERSION = "v1"

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


# --------------------------------------------------------------------------------------------------
# Locations and time


def day_start(day: dt.date) -> dt.datetime:
    """Midnight UTC at the start of ``day``."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def snapshot_timestamp(day: dt.date) -> dt.datetime:
    """The ``event_timestamp`` of day ``day``'s snapshot: the end of the day (``day+1 00:00 UTC``)."""
    return day_start(day + dt.timedelta(days=1))


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else current_settings()


def snapshot_location(view: str, day: dt.date, settings: Settings | None = None) -> lake.Location:
    """Where the snapshot of ``view`` (``customer`` or ``merchant``) for ``day`` is written."""
    return lake.partition("lake", lake.feature_snapshots(view), day, settings).join(lake.DATA_FILE)


def snapshot_glob(lake_url: str, view: str) -> str:
    """The path pattern a Feast source reads: every day's snapshot file, never a temporary one."""
    return lake.partition_glob(lake_url, lake.feature_snapshots(view))


def _summary_location(base: lake.Location, kind: str, day: dt.date) -> lake.Location:
    return lake.partition_at(base, lake.feature_summaries(_SUMMARY_VERSION, kind), day).join(lake.DATA_FILE)


def _read_summary(
    base: lake.Location, kind: str, day: dt.date, columns: list[str] | None = None
) -> pa.Table | None:
    loc = _summary_location(base, kind, day)
    if not lake.exists(loc):
        return None
    schema = _SUMMARY_SCHEMAS[kind]
    # Ids and countries repeat across rows and days: dictionary-encoded, 30 days of them take a
    # fraction of the memory and DuckDB groups them faster.
    strings = [f.name for f in schema if f.type == pa.string() and (columns is None or f.name in columns)]
    table = pq.read_table(loc.path, filesystem=loc.fs, columns=columns, read_dictionary=strings)
    return table.cast(pa.schema([_dictionary(schema.field(name)) for name in table.column_names]))


def _dictionary(field: pa.Field) -> pa.Field:
    return field.with_type(pa.dictionary(pa.int32(), pa.string())) if field.type == pa.string() else field


def stable_key(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A 64-bit key of each id (FNV-1a of its UTF-8 bytes), the same in every process and version.

    Used to count distinct merchants per customer on integers. Two ids of one customer colliding
    has a probability of about 1e-17; DuckDB's ``hash()`` would be faster but may change between
    versions, which would mix two key spaces in a 30-day window.
    """
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    array = array.cast(pa.large_string())
    n = len(array)
    if n == 0:
        return pa.array([], pa.int64())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64, count=n + 1, offset=array.offset * 8)
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    key = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    # Ids of one length at a time, as a (rows, length) byte matrix: a handful of vector operations
    # per character instead of a Python loop per id.
    with np.errstate(over="ignore"):
        for length in np.unique(lengths):
            if length == lengths[0] and (lengths == length).all():
                rows = slice(None)  # one length (fixed-width ids): the bytes are already a matrix
                chars = data[starts[0] : starts[0] + n * length].reshape(n, length)
            else:
                rows = np.flatnonzero(lengths == length)
                chars = data[starts[rows, None] + np.arange(length)]
            columns = np.ascontiguousarray(chars.T)
            group = key[rows]
            for i in range(int(length)):
                group = (group ^ columns[i]) * _FNV_PRIME
            key[rows] = group
    return pa.array(key.view(np.int64), pa.int64())


# --------------------------------------------------------------------------------------------------
# Daily summaries


def _duckdb() -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()
    # hour() of a TIMESTAMPTZ follows the session time zone: pin it so features never depend on the host.
    con.execute("SET TimeZone = 'UTC'")
    # An in-memory database spills to ".tmp" under the working directory by default (the project,
    # when run from there): keep any spill in the system's temporary folder.
    con.execute("SET temp_directory = $1", [str(Path(tempfile.gettempdir()) / "mlops-duckdb")])
    return con


def _arrow(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pa.Table:
    return con.sql(sql, params=params).to_arrow_table()


def _day_bounds(day: dt.date) -> list[dt.datetime]:
    return [day_start(day), day_start(day + dt.timedelta(days=1))]


def _build_transaction_summaries(
    con: duckdb.DuckDBPyConnection, base: lake.Location, day: dt.date
) -> int | None:
    """Write the transaction summaries of ``day``; the number of payments, or None without data."""
    columns = [
        "transaction_id",
        "event_timestamp",
        "customer_id",
        "merchant_id",
        "amount",
        "country",
        "channel",
    ]
    tx = lake.read_table(lake.partition_at(base, TRANSACTIONS.name, day), columns)
    if tx is None:
        return None
    con.register("tx_arrow", tx)
    try:
        # One conversion from Arrow, then every aggregation on DuckDB's own storage.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE tx AS
            SELECT transaction_id, customer_id, merchant_id, country,
                   CAST(round(amount * 100) AS BIGINT) AS cents,
                   hour(event_timestamp) < {NIGHT_END_HOUR} AS night,
                   channel = 'online' AS online,
                   amount < {SMALL_AMOUNT} AS small
            FROM tx_arrow WHERE event_timestamp >= $1 AND event_timestamp < $2""",
            _day_bounds(day),
        )
    finally:
        con.unregister("tx_arrow")
    rows = int(con.sql("SELECT count(*) FROM tx").fetchall()[0][0])
    customer = _arrow(
        con,
        """
        SELECT customer_id, country, count(*) AS n, sum(cents) AS cents, sum(cents * cents) AS cents_sq,
               count(*) FILTER (WHERE night) AS night_n,
               count(*) FILTER (WHERE online) AS online_n,
               count(*) FILTER (WHERE small) AS small_n
        FROM tx GROUP BY customer_id, country ORDER BY customer_id, country""",
    )
    customer = customer.add_column(1, "customer_key", stable_key(customer.column("customer_id")))
    payments = _arrow(con, "SELECT transaction_id, merchant_id FROM tx")
    payments = pa.table(
        {
            "transaction_key": stable_key(payments.column("transaction_id")),
            "merchant_id": payments["merchant_id"],
        }
    ).sort_by("transaction_key")
    pairs = _arrow(con, "SELECT DISTINCT customer_id, merchant_id FROM tx")
    pairs = pa.table(
        {
            "customer_key": stable_key(pairs.column("customer_id")),
            "merchant_key": stable_key(pairs.column("merchant_id")),
        }
    ).sort_by([("customer_key", "ascending"), ("merchant_key", "ascending")])
    merchant = _arrow(
        con,
        "SELECT merchant_id, count(*) AS n, sum(cents) AS cents FROM tx "
        "GROUP BY merchant_id ORDER BY merchant_id",
    )
    con.execute("DROP TABLE tx")
    summaries = {
        "customer_country": customer,
        "customer_merchant": pairs,
        "merchant": merchant,
        "payments": payments,
    }
    for kind, table in summaries.items():
        lake.write_parquet(_summary_location(base, kind, day), table.cast(_SUMMARY_SCHEMAS[kind]))
    return rows


def _build_label_summary(
    con: duckdb.DuckDBPyConnection, base: lake.Location, day: dt.date
) -> tuple[int, int] | None:
    """Write the labels-per-merchant summary of ``day``: (labels, labels whose payment was not found)."""
    labels = lake.read_table(
        lake.partition_at(base, LABELS.name, day), ["transaction_id", "is_fraud", "reported_at"]
    )
    if labels is None:
        return None
    bounds = _day_bounds(day)
    reported = labels.column("reported_at")
    labels = labels.filter(pc.and_(pc.greater_equal(reported, bounds[0]), pc.less(reported, bounds[1])))
    labels = pa.table(
        {"transaction_key": stable_key(labels.column("transaction_id")), "is_fraud": labels["is_fraud"]}
    )
    # Labels of day D concern payments of D-5 .. D-1; D itself costs nothing more and tolerates a
    # same-day chargeback.
    indexes = []
    for back in range(MAX_LABEL_DELAY_DAYS + 1):
        paid = day - dt.timedelta(days=back)
        index = _read_summary(base, "payments", paid)
        if index is None and _build_transaction_summaries(con, base, paid) is not None:
            index = _read_summary(base, "payments", paid)
        if index is not None:
            indexes.append(index)
    pay = pa.concat_tables(indexes) if indexes else _SUMMARY_SCHEMAS["payments"].empty_table()
    con.register("labels_arrow", labels)
    con.register("pay", pay)
    try:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE joined AS
            SELECT l.is_fraud, p.merchant_id
            FROM labels_arrow l LEFT JOIN pay p USING (transaction_key)"""
        )
    finally:
        con.unregister("labels_arrow")
        con.unregister("pay")
    total, unmatched = con.sql(
        "SELECT count(*), count(*) FILTER (WHERE merchant_id IS NULL) FROM joined"
    ).fetchall()[0]
    table = _arrow(
        con,
        """
        SELECT merchant_id, count(*) AS labelled_n, sum(CAST(is_fraud AS BIGINT)) AS fraud_n
        FROM joined WHERE merchant_id IS NOT NULL GROUP BY merchant_id ORDER BY merchant_id""",
    )
    con.execute("DROP TABLE joined")
    lake.write_parquet(
        _summary_location(base, "merchant_labels", day), table.cast(_SUMMARY_SCHEMAS["merchant_labels"])
    )
    return int(total), int(unmatched)


def _ensure_history(con: duckdb.DuckDBPyConnection, base: lake.Location, day: dt.date) -> list[str]:
    """Build the summaries of the 30 days before ``day`` that are missing but have lake data."""
    built = []
    for back in range(1, HISTORY_DAYS + 1):
        past = day - dt.timedelta(days=back)
        have_payments = all(lake.exists(_summary_location(base, k, past)) for k in _TRANSACTION_SUMMARIES)
        if not have_payments and _build_transaction_summaries(con, base, past) is not None:
            built.append(f"transactions:{past.isoformat()}")
        have_labels = all(lake.exists(_summary_location(base, k, past)) for k in _LABEL_SUMMARIES)
        if not have_labels and _build_label_summary(con, base, past) is not None:
            built.append(f"labels:{past.isoformat()}")
    return built


def _load_history(
    con: duckdb.DuckDBPyConnection, base: lake.Location, day: dt.date, kind: str, key: str | None
) -> int:
    """Register ``kind``'s summaries of the 30 days up to ``day`` as table ``h_<kind>`` with a ``lag`` column.

    ``lag`` is the number of days before ``day`` (0..29). With ``key``, the ids of the summary 30
    days before go to ``gone_<kind>``: the entities that may just have left the 30-day window.
    Returns how many days had a summary.
    """
    parts = []
    for lag in range(HISTORY_DAYS):
        table = _read_summary(base, kind, day - dt.timedelta(days=lag))
        if table is not None:
            parts.append(table.append_column("lag", pa.array(np.full(table.num_rows, lag, np.int32))))
    schema = pa.schema([_dictionary(f) for f in _SUMMARY_SCHEMAS[kind]]).append(pa.field("lag", pa.int32()))
    # Registered, not copied: the snapshot query scans each history once, and a copy into DuckDB
    # would double the memory of the largest step.
    con.register(f"h_{kind}", pa.concat_tables(parts) if parts else schema.empty_table())
    if key is not None:
        before = _read_summary(base, kind, day - dt.timedelta(days=HISTORY_DAYS), [key])
        ids = before if before is not None else pa.table({key: pa.array([], pa.string())})
        con.register("gone_arrow", ids)
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE gone_{kind} AS SELECT DISTINCT {key} FROM gone_arrow")
        finally:
            con.unregister("gone_arrow")
    return len(parts)


# --------------------------------------------------------------------------------------------------
# Snapshots


def _bucket(column: str = "lag") -> str:
    """The smallest window a day falls in (1, 7 or 30): window ``w`` sums the buckets ``<= w``."""
    cases = " ".join(f"WHEN {column} < {w} THEN {w}" for w in WINDOWS_DAYS[:-1])
    return f"CASE {cases} ELSE {WINDOWS_DAYS[-1]} END"


def _customer_snapshot_sql() -> str:
    windows = WINDOWS_DAYS
    stats = ("n", "cents", "cents_sq", "night_n", "online_n")
    per_country = ",\n".join(
        f"coalesce(sum({col}) FILTER (WHERE bucket <= {w}), 0) AS {col}_{w}" for w in windows for col in stats
    )
    per_customer = ",\n".join(f"sum({col}_{w}) AS {col}_{w}" for w in windows for col in stats)
    home_fields = ", ".join(f"'n_{w}': n_{w}" for w in windows)
    distinct = ",\n".join(f"count(*) FILTER (WHERE first_lag < {w}) AS dm_{w}" for w in windows)

    def share(count: str, w: int) -> str:
        return f"CASE WHEN n_{w} > 0 THEN CAST({count} AS DOUBLE) / n_{w} END"

    expressions = {
        "txn_count": lambda w: f"CAST(n_{w} AS BIGINT)",
        "amount_sum": lambda w: f"CAST(cents_{w} AS DOUBLE) / 100",
        "amount_mean": lambda w: f"CASE WHEN n_{w} > 0 THEN CAST(cents_{w} AS DOUBLE) / (100 * n_{w}) END",
        # Population std from exact integer sums: n*q - s^2 is exact, so identical amounts give
        # exactly 0 (a float difference of squares would leave noise that explodes a z-score).
        "amount_std": lambda w: (
            f"CASE WHEN n_{w} > 0 "
            f"THEN sqrt(CAST(n_{w} * cents_sq_{w} - cents_{w} * cents_{w} AS DOUBLE)) / (100 * n_{w}) END"
        ),
        "distinct_merchants": lambda w: f"coalesce(dm_{w}, 0)",
        "foreign_share": lambda w: share(f"n_{w} - home_row.n_{w}", w),
        "night_share": lambda w: share(f"night_n_{w}", w),
        "online_share": lambda w: share(f"online_n_{w}", w),
    }
    columns = {
        f"customer_{name}_{w}d": expressions[name](w) for name, _ in _CUSTOMER_WINDOWED for w in windows
    }
    columns["customer_small_amount_count_1d"] = "CAST(small_1 AS BIGINT)"
    columns["customer_home_country"] = "home_row.country"
    assert list(columns) == [name for name, _ in CUSTOMER_FEATURES]
    select = ",\n".join(f"{expr} AS {name}" for name, expr in columns.items())
    nulls = ",\n".join(f"NULL AS {name}" for name in columns)
    sums = ", ".join(f"sum({col}) AS {col}" for col in (*stats, "small_n"))
    return f"""
    WITH bucketed AS (
        -- One pass over the 30 days with plain sums; the windows then add up at most three rows.
        SELECT customer_key, country, {_bucket()} AS bucket, any_value(customer_id) AS customer_id, {sums}
        FROM h_customer_country GROUP BY customer_key, country, bucket
    ),
    per_country AS (
        SELECT customer_key, country, any_value(customer_id) AS customer_id, {per_country},
               coalesce(sum(small_n) FILTER (WHERE bucket <= 1), 0) AS small_1
        FROM bucketed GROUP BY customer_key, country
    ),
    agg AS (
        SELECT customer_key, any_value(customer_id) AS customer_id, {per_customer},
               -- The home country is the most used one over the 30 days before the snapshot (ties:
               -- by name): the smallest (-count, country), carried with its counts per window.
               min({{'neg_n': -n_{HISTORY_DAYS}, 'country': country, {home_fields}}}) AS home_row,
               sum(small_1) AS small_1
        FROM per_country GROUP BY customer_key
    ),
    merchants AS (
        SELECT customer_key, {distinct}
        FROM (SELECT customer_key, merchant_key, min(lag) AS first_lag
              FROM h_customer_merchant GROUP BY customer_key, merchant_key)
        GROUP BY customer_key
    ),
    gone AS (SELECT customer_id FROM gone_customer_country EXCEPT SELECT customer_id FROM agg)
    SELECT customer_id, $1 AS event_timestamp, {select}
    FROM agg LEFT JOIN merchants USING (customer_key)
    UNION ALL
    SELECT customer_id, $1 AS event_timestamp, {nulls} FROM gone
    ORDER BY customer_id"""


def _merchant_snapshot_sql() -> str:
    tx = ",\n".join(
        f"coalesce(sum(n) FILTER (WHERE lag < {w}), 0) AS n_{w}, "
        f"coalesce(sum(cents) FILTER (WHERE lag < {w}), 0) AS s_{w}"
        for w in WINDOWS_DAYS
    )
    lab = ",\n".join(
        f"coalesce(sum(labelled_n) FILTER (WHERE lag < {w}), 0) AS l_{w}, "
        f"coalesce(sum(fraud_n) FILTER (WHERE lag < {w}), 0) AS f_{w}"
        for w in WINDOWS_DAYS
    )
    expressions = {
        "txn_count": lambda w: f"CAST(coalesce(n_{w}, 0) AS BIGINT)",
        "amount_mean": lambda w: f"CASE WHEN n_{w} > 0 THEN CAST(s_{w} AS DOUBLE) / (100 * n_{w}) END",
        "labelled_count": lambda w: f"CAST(coalesce(l_{w}, 0) AS BIGINT)",
        "fraud_rate": lambda w: f"CASE WHEN l_{w} > 0 THEN CAST(f_{w} AS DOUBLE) / l_{w} END",
    }
    columns = {
        f"merchant_{name}_{w}d": expressions[name](w) for name, _ in _MERCHANT_WINDOWED for w in WINDOWS_DAYS
    }
    assert list(columns) == [name for name, _ in MERCHANT_FEATURES]
    select = ",\n".join(f"{expr} AS {name}" for name, expr in columns.items())
    nulls = ",\n".join(f"NULL AS {name}" for name in columns)
    return f"""
    WITH tx AS (SELECT merchant_id, {tx} FROM h_merchant GROUP BY merchant_id),
    lab AS (SELECT merchant_id, {lab} FROM h_merchant_labels GROUP BY merchant_id),
    present AS (SELECT merchant_id FROM tx UNION SELECT merchant_id FROM lab),
    gone AS (
        SELECT merchant_id FROM gone_merchant UNION SELECT merchant_id FROM gone_merchant_labels
        EXCEPT SELECT merchant_id FROM present
    )
    SELECT merchant_id, $1 AS event_timestamp, {select}
    FROM present LEFT JOIN tx USING (merchant_id) LEFT JOIN lab USING (merchant_id)
    UNION ALL
    SELECT merchant_id, $1 AS event_timestamp, {nulls} FROM gone
    ORDER BY merchant_id"""


def compute_features_for_day(day: dt.date, settings: Settings | None = None) -> dict:
    """Compute and write the customer and merchant snapshots of ``day`` (``event_timestamp`` = end of day).

    Reads the day's transactions (and the labels reported that day, if landed) from the lake,
    refreshes the day's summaries, builds any missing summary of the 30 days before from the lake,
    and writes ``<lake>/features/{customer,merchant}/dt=<day>/part-00000.parquet`` atomically.
    Deterministic: a rerun with the same lake writes the same bytes.

    Returns rows per view, the paths, the history used and the seconds taken.
    """
    started = time.perf_counter()
    s = _settings(settings)
    base = lake.root("lake", s)
    con = _duckdb()
    try:
        payments = _build_transaction_summaries(con, base, day)
        if payments is None:
            raise FileNotFoundError(
                f"no transactions in the lake for {day.isoformat()} "
                f"({lake.partition_at(base, TRANSACTIONS.name, day).url}): ingest that day first"
            )
        labels = _build_label_summary(con, base, day)
        built = _ensure_history(con, base, day)

        history_days = _load_history(con, base, day, "customer_country", "customer_id")
        _load_history(con, base, day, "customer_merchant", None)
        _load_history(con, base, day, "merchant", "merchant_id")
        _load_history(con, base, day, "merchant_labels", "merchant_id")

        ts = snapshot_timestamp(day)
        customer = _arrow(con, _customer_snapshot_sql(), [ts]).cast(CUSTOMER_SNAPSHOT_SCHEMA)
        merchant = _arrow(con, _merchant_snapshot_sql(), [ts]).cast(MERCHANT_SNAPSHOT_SCHEMA)
    finally:
        con.close()

    paths = {}
    for view, table in (("customer", customer), ("merchant", merchant)):
        loc = snapshot_location(view, day, s)
        lake.write_parquet(loc, table)
        paths[view] = loc.url
    return {
        "day": day.isoformat(),
        "snapshot_timestamp": ts.isoformat(),
        "transactions": payments,
        # Labels that land after this run count from the next day's snapshot on (never earlier).
        "labels_landed": labels is not None,
        "labels": labels[0] if labels else 0,
        "labels_without_payment": labels[1] if labels else 0,
        "history_days": history_days,
        "summaries_built": built,
        "rows": {"customer": customer.num_rows, "merchant": merchant.num_rows},
        "paths": paths,
        "seconds": round(time.perf_counter() - started, 3),
    }


# --------------------------------------------------------------------------------------------------
# On-demand transformations (referenced by feature_repo/features.py; run by Feast offline and online)


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    import pandas as pd

    # Online, a missing feature arrives as None in an object column: coerce to float NaN.
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator > 0)).astype("float64")


def transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """Features of the payment itself: its UTC hour, night-time, channel, card presence, small amount."""
    import pandas as pd

    out = pd.DataFrame(index=inputs.index)
    hour = pd.to_datetime(inputs["event_timestamp"], utc=True).dt.hour.astype("int64")
    out["transaction_hour"] = hour
    out["is_night"] = (hour < NIGHT_END_HOUR).astype("int64")
    out["is_online"] = (inputs["channel"].astype("string") == "online").fillna(False).astype("int64")
    out["is_card_present"] = inputs["card_present"].astype("boolean").fillna(False).astype("int64")
    out["is_small_amount"] = (_numeric(inputs, "amount") < SMALL_AMOUNT).astype("int64")
    return out


def customer_transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """The payment against its customer's snapshot: amount vs 7/30-day mean, z-score, foreign country."""
    import numpy as np
    import pandas as pd

    out = pd.DataFrame(index=inputs.index)
    amount = _numeric(inputs, "amount")
    mean_30 = _numeric(inputs, "customer_amount_mean_30d")
    std_30 = _numeric(inputs, "customer_amount_std_30d")
    out["amount_to_customer_mean_7d"] = _ratio(amount, _numeric(inputs, "customer_amount_mean_7d"))
    out["amount_to_customer_mean_30d"] = _ratio(amount, mean_30)
    out["amount_zscore_30d"] = _ratio(amount - mean_30, std_30)
    home = inputs["customer_home_country"].astype("string")
    country = inputs["country"].astype("string")
    out["is_foreign_country"] = np.where(home.isna(), np.nan, (country != home).astype("float64"))
    return out


def merchant_transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """The payment against its merchant's snapshot: amount vs the merchant's 30-day mean."""
    import pandas as pd

    out = pd.DataFrame(index=inputs.index)
    out["amount_to_merchant_mean_30d"] = _ratio(
        _numeric(inputs, "amount"), _numeric(inputs, "merchant_amount_mean_30d")
    )
    return out


# --------------------------------------------------------------------------------------------------
# Feast store, definitions and materialization


def _feast_redis_connection(url: str) -> str:
    """Feast's Redis connection string (``host:port,db=N,...``) from a ``redis://`` URL or itself."""
    if not url.startswith(("redis://", "rediss://")):
        return url
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    db = parsed.path.strip("/")
    if db:
        parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.username and parsed.username != "default":
        parts.append(f"username={parsed.username}")
    if parsed.scheme == "rediss" or parse_qs(parsed.query).get("ssl") == ["true"]:
        parts.append("ssl=true")
    return ",".join(parts)


def _feast_env(s: Settings) -> dict[str, str]:
    """The variables the ``feature_store*.yaml`` files refer to, from the settings."""
    return {
        "MLOPS_FEAST_REGISTRY": s.feast_registry,
        "MLOPS_FEAST_ONLINE_PATH": s.feast_online_path,
        "MLOPS_REDIS_URL": _feast_redis_connection(s.redis_url),
    }


def feature_store_yaml(settings: Settings | None = None) -> Path:
    """The configuration for the profile: ``feature_store.yaml`` or ``feature_store.cluster.yaml``."""
    s = _settings(settings)
    name = "feature_store.cluster.yaml" if s.is_cluster else "feature_store.yaml"
    return Path(s.feast_repo) / name


def _expand(text: str, env: dict[str, str], source: Path) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ValueError(f"{source} refers to ${{{name}}}, which is not set")
        return env[name]

    return re.sub(r"\$\{(\w+)\}", value, text)


def _typechecked_off(target: Any = None, **_options: Any) -> Any:
    """typeguard's ``@typechecked`` as ``python -O`` makes it: the function or class unchanged."""
    return _typechecked_off if target is None else target


def _quiet_feast_import() -> None:
    """Switch off typeguard's import-time instrumentation before Feast is imported.

    Feast decorates about 260 functions with typeguard's ``@typechecked``, which re-parses and
    recompiles the decorated function's whole module, once per function, while Feast is imported:
    4.5 s of the 7 s ``import feast`` took on a 2-core machine (2.6 s without), paid by every task
    that touches the feature store. typeguard documents the decorator as a development aid that
    ``python -O`` turns into a no-op; this makes it the same no-op for the process (the checks it
    skips only raise on type errors in calls into Feast). Without effect once Feast is imported.
    """
    if "feast" in sys.modules:
        return
    import typeguard

    typeguard.typechecked = _typechecked_off


def feature_store(settings: Settings | None = None) -> feast.FeatureStore:
    """A Feast store over ``feature_repo/`` with the profile's configuration and the settings' paths.

    The yaml's ``${VAR}`` references are filled from the settings (over the process environment),
    so a store can be built for settings other than the process's own (tests, tools).
    """
    import yaml

    _quiet_feast_import()
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    s = _settings(settings)
    repo = Path(s.feast_repo).resolve()
    source = feature_store_yaml(s)
    env = {**os.environ, **_feast_env(s)}
    config = RepoConfig(**yaml.safe_load(_expand(source.read_text(), env, source)))
    config.repo_path = repo
    if not s.is_cluster:
        # The file registry and the SQLite database are created on first use, but not their folder.
        for path in (s.feast_registry, s.feast_online_path):
            if "://" not in path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(repo), config=config)


def _repo_objects(s: Settings) -> list[Any]:
    """The definitions of ``feature_repo/``, with the snapshot sources pointing at the settings' lake.

    Feast's own ``parse_repo`` names modules relative to the working directory (the CLI changes
    into the repository first); changing a whole process's directory is not an option inside a
    task, so the modules are imported here by their top-level names, as the CLI sees them.
    """
    import importlib

    _quiet_feast_import()
    from feast import Entity, FeatureService, FeatureView, FileSource, OnDemandFeatureView
    from feast.data_source import DataSource
    from feast.repo_operations import get_repo_files

    repo = Path(s.feast_repo).resolve()
    if str(repo) not in sys.path:
        # Appended, so that these few top-level names never shadow an installed package.
        sys.path.append(str(repo))
    kinds = (DataSource, Entity, FeatureView, OnDemandFeatureView, FeatureService)
    objects: list[Any] = []
    for path in get_repo_files(repo):
        module = importlib.import_module(".".join(path.relative_to(repo).with_suffix("").parts))
        for value in vars(module).values():
            if isinstance(value, kinds) and not any(value is seen for seen in objects):
                objects.append(value)
    for source in objects:
        if isinstance(source, FileSource) and source.tags.get("snapshot"):
            source.file_options.uri = snapshot_glob(s.lake_url, source.tags["snapshot"])
            if s.lake_url.startswith("s3://") and s.s3_endpoint_url:
                source.file_options.s3_endpoint_override = s.s3_endpoint_url
    return objects


def apply_definitions(settings: Settings | None = None) -> dict:
    """Register the definitions of ``feature_repo/`` through the Python API (idempotent).

    Also creates the online store's tables. Objects registered earlier under names that the
    repository no longer defines are removed, as ``feast apply`` would. Returns what was applied.
    """
    started = time.perf_counter()
    s = _settings(settings)
    store = feature_store(s)
    objects = _repo_objects(s)
    names = {(type(o).__name__, o.name) for o in objects}
    stale: list[Any] = [
        o
        for o in (
            *store.list_feature_services(),
            *store.list_on_demand_feature_views(),
            *store.list_feature_views(),
        )
        if (type(o).__name__, o.name) not in names
    ]
    store.apply(objects, objects_to_delete=stale, partial=not stale)
    return {
        "project": store.project,
        "feature_views": sorted(o.name for o in objects if type(o).__name__ == "FeatureView"),
        "on_demand_feature_views": sorted(
            o.name for o in objects if type(o).__name__ == "OnDemandFeatureView"
        ),
        "feature_services": sorted(o.name for o in objects if type(o).__name__ == "FeatureService"),
        "deleted": sorted(o.name for o in stale),
        "seconds": round(time.perf_counter() - started, 3),
    }


def materialize_day(day: dt.date, settings: Settings | None = None) -> dict:
    """Load the snapshots of ``day`` into the online store: ``materialize`` over exactly that interval.

    The definitions are registered first (:func:`apply_definitions`). The interval is
    ``[end of day, end of day + 1 day)``, which holds that day's snapshot and no other. Rerunning a
    day writes the same values again. A view whose online store already holds a later day (a
    backfill of an old day) is left alone: the later snapshots supersede it (an entity that left the
    window got a null row), so writing it would only roll the store back.
    """
    started = time.perf_counter()
    s = _settings(settings)
    for view in ("customer", "merchant"):
        loc = snapshot_location(view, day, s)
        if not lake.exists(loc):
            raise FileNotFoundError(
                f"no {view} snapshot for {day.isoformat()} at {loc.url}: run compute_features_for_day first"
            )
    # Registering first keeps the registry in step with the code that runs (and bootstraps a fresh
    # home); it is idempotent and keeps the views' materialization history.
    apply_definitions(s)
    store = feature_store(s)
    start = snapshot_timestamp(day)
    end = start + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    to_load, skipped = [], {}
    for name in (CUSTOMER_VIEW, MERCHANT_VIEW):
        view = store.registry.get_feature_view(name, store.project, allow_cache=False)
        latest = max((e for _, e in view.materialization_intervals), default=None)
        if latest is not None and latest > end:
            skipped[name] = f"online store already holds a later snapshot (up to {latest.isoformat()})"
        else:
            to_load.append(name)
    if to_load:
        store.materialize(start_date=start, end_date=end, feature_views=to_load)
    rows = {
        view: pq.read_metadata((loc := snapshot_location(view, day, s)).path, filesystem=loc.fs).num_rows
        for view in ("customer", "merchant")
    }
    return {
        "day": day.isoformat(),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "materialized": to_load,
        "skipped": skipped,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 3),
    }


# --------------------------------------------------------------------------------------------------
# Retrieval


_ROW = "__row"


def training_frame(entity_df: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """The input rows with the feature service's features at each row's ``event_timestamp``.

    ``entity_df`` needs ``customer_id``, ``merchant_id``, ``event_timestamp`` and the request fields
    (:data:`REQUEST_FIELDS`); a lake transactions table has them all. Feast neither keeps the order
    nor, for some stores, every row: each row is tagged with its position (not its transaction id,
    so that even repeated ids come back once each) and the result is put back in input order. Every
    input row comes back (an error otherwise), with its own columns unchanged followed by
    :data:`FEATURE_COLUMNS`.
    """
    import pandas as pd

    missing = [c for c in (*ENTITY_KEYS, *REQUEST_FIELDS) if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df lacks {missing}: it needs {ENTITY_KEYS} and {REQUEST_FIELDS}")
    clash = [c for c in (*FEATURE_COLUMNS, _ROW) if c in entity_df.columns]
    if clash:
        raise ValueError(f"entity_df already has feature columns {clash}")
    base = entity_df.reset_index(drop=True)
    request = base[[*ENTITY_KEYS, *REQUEST_FIELDS]].copy()
    request["event_timestamp"] = pd.to_datetime(request["event_timestamp"], utc=True)
    request[_ROW] = range(len(request))
    if request.empty:
        return pd.concat([base, pd.DataFrame(columns=list(FEATURE_COLUMNS))], axis=1)

    store = feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE_NAME)
    result = store.get_historical_features(entity_df=request, features=service).to_df()
    if len(result) != len(request) or set(result[_ROW]) != set(request[_ROW]):
        raise RuntimeError(
            f"the offline store returned {len(result)} rows for {len(request)} entity rows "
            f"({len(set(request[_ROW]) - set(result[_ROW]))} missing)"
        )
    features = result.set_index(_ROW).sort_index()[list(FEATURE_COLUMNS)]
    features.index = base.index
    return pd.concat([base, features], axis=1)


def online_features(entity_rows: list[dict], settings: Settings | None = None) -> pd.DataFrame:
    """The feature service's features for live payments, one output row per input row, in order.

    Each row needs ``customer_id``, ``merchant_id`` and the request fields (:data:`REQUEST_FIELDS`);
    other keys (such as ``transaction_id``) are passed through to the output.
    """
    import pandas as pd

    needed = (*ENTITY_KEYS, *REQUEST_FIELDS)
    rows = []
    for i, row in enumerate(entity_rows):
        absent = [k for k in needed if k not in row]
        if absent:
            raise ValueError(f"entity row {i} lacks {absent}")
        rows.append({k: row[k] for k in needed})
    base = pd.DataFrame(entity_rows)
    if not rows:
        return pd.concat([base, pd.DataFrame(columns=list(FEATURE_COLUMNS))], axis=1)
    store = feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE_NAME)
    result = store.get_online_features(features=service, entity_rows=rows).to_df()
    features = result[list(FEATURE_COLUMNS)].reset_index(drop=True)
    return pd.concat([base.drop(columns=[c for c in FEATURE_COLUMNS if c in base]), features], axis=1)
