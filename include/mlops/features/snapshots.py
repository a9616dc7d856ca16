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

The daily summaries it reads are :mod:`.summaries`; the Feast side is :mod:`.store`. DuckDB is
imported inside the functions.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from include.mlops import lake
from include.mlops.core.schema import TRANSACTIONS
from include.mlops.core.settings import resolve_settings
from include.mlops.features.contract import (
    _CUSTOMER_WINDOWED,
    _MERCHANT_WINDOWED,
    CUSTOMER_FEATURES,
    CUSTOMER_SNAPSHOT_SCHEMA,
    HISTORY_DAYS,
    MERCHANT_FEATURES,
    MERCHANT_SNAPSHOT_SCHEMA,
    WINDOWS_DAYS,
    snapshot_location,
    snapshot_timestamp,
)
from include.mlops.features.summaries import (
    _arrow,
    _build_label_summary,
    _build_transaction_summaries,
    _duckdb,
    _ensure_history,
    _load_history,
)

if TYPE_CHECKING:
    import datetime as dt

    from include.mlops.core.settings import Settings


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
    s = resolve_settings(settings)
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
