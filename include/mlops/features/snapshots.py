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

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.mlops import lake
from include.mlops.core.schema import TRANSACTIONS
from include.mlops.core.settings import resolve_settings
from include.mlops.features.contract import (
    CUSTOMER_FEATURES,
    CUSTOMER_SNAPSHOT_SCHEMA,
    CUSTOMER_WINDOWED,
    HISTORY_DAYS,
    MERCHANT_FEATURES,
    MERCHANT_SNAPSHOT_SCHEMA,
    MERCHANT_WINDOWED,
    SNAPSHOT_VIEWS,
    WINDOWS_DAYS,
    snapshot_location,
    snapshot_timestamp,
)
from include.mlops.features.engine import duckdb_connection, query_arrow
from include.mlops.features.summaries import (
    build_label_summary,
    build_transaction_summaries,
    ensure_history,
    load_history,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable

    import pyarrow as pa

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)


def _bucket(column: str = "lag") -> str:
    """The smallest window a day falls in (1, 7 or 30): window ``w`` sums the buckets ``<= w``."""
    cases = " ".join(f"WHEN {column} < {w} THEN {w}" for w in WINDOWS_DAYS[:-1])
    return f"CASE {cases} ELSE {WINDOWS_DAYS[-1]} END"


# The additive statistics of a customer's summary that every window sums.
_CUSTOMER_STATS = ("n", "cents", "cents_sq", "night_n", "online_n")


def _customer_expressions() -> dict[str, Callable[[int], str]]:
    """Each windowed customer statistic as SQL over the window's sums (``n_<w>``, ``cents_<w>`` ...)."""

    def share(count: str, w: int) -> str:
        return f"CASE WHEN n_{w} > 0 THEN CAST({count} AS DOUBLE) / n_{w} END"

    return {
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


def _customer_columns() -> dict[str, str]:
    """Every column of the customer snapshot after the key and timestamp, as its SQL expression."""
    expressions = _customer_expressions()
    columns = {
        f"customer_{name}_{w}d": expressions[name](w) for name, _ in CUSTOMER_WINDOWED for w in WINDOWS_DAYS
    }
    columns["customer_small_amount_count_1d"] = "CAST(small_1 AS BIGINT)"
    columns["customer_home_country"] = "home_row.country"
    assert list(columns) == [name for name, _ in CUSTOMER_FEATURES]
    return columns


def _customer_snapshot_sql() -> str:
    """The customer snapshot's query over the registered histories (see :func:`.load_history`).

    It reads ``h_customer_country``, ``h_customer_merchant`` and ``gone_customer_country``; ``$1``
    is the snapshot's timestamp. One row per customer with a payment in the 30 days, and a row of
    nulls for each customer that just left the window.
    """
    windows = WINDOWS_DAYS
    per_country = ",\n".join(
        f"coalesce(sum({col}) FILTER (WHERE bucket <= {w}), 0) AS {col}_{w}"
        for w in windows
        for col in _CUSTOMER_STATS
    )
    per_customer = ",\n".join(f"sum({col}_{w}) AS {col}_{w}" for w in windows for col in _CUSTOMER_STATS)
    home_fields = ", ".join(f"'n_{w}': n_{w}" for w in windows)
    distinct = ",\n".join(f"count(*) FILTER (WHERE first_lag < {w}) AS dm_{w}" for w in windows)
    columns = _customer_columns()
    select = ",\n".join(f"{expr} AS {name}" for name, expr in columns.items())
    nulls = ",\n".join(f"NULL AS {name}" for name in columns)
    sums = ", ".join(f"sum({col}) AS {col}" for col in (*_CUSTOMER_STATS, "small_n"))
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


def _merchant_columns() -> dict[str, str]:
    """Every column of the merchant snapshot after the key and timestamp, as its SQL expression."""
    expressions = {
        "txn_count": lambda w: f"CAST(coalesce(n_{w}, 0) AS BIGINT)",
        "amount_mean": lambda w: f"CASE WHEN n_{w} > 0 THEN CAST(s_{w} AS DOUBLE) / (100 * n_{w}) END",
        "labelled_count": lambda w: f"CAST(coalesce(l_{w}, 0) AS BIGINT)",
        "fraud_rate": lambda w: f"CASE WHEN l_{w} > 0 THEN CAST(f_{w} AS DOUBLE) / l_{w} END",
    }
    columns = {
        f"merchant_{name}_{w}d": expressions[name](w) for name, _ in MERCHANT_WINDOWED for w in WINDOWS_DAYS
    }
    assert list(columns) == [name for name, _ in MERCHANT_FEATURES]
    return columns


def _merchant_snapshot_sql() -> str:
    """The merchant snapshot's query over the registered histories (see :func:`.load_history`).

    It reads ``h_merchant``, ``h_merchant_labels`` and their ``gone_`` tables; ``$1`` is the
    snapshot's timestamp. One row per merchant with a payment or a label in the 30 days, and a row
    of nulls for each merchant that just left the window.
    """
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
    columns = _merchant_columns()
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


@dataclass(frozen=True)
class _DaySnapshots:
    """The two snapshots of a day and what went into them."""

    customer: pa.Table
    merchant: pa.Table
    payments: int
    labels: tuple[int, int] | None  # (labels, labels whose payment was not found); None: none landed
    history_days: int
    built: list[str]


def _compute_snapshots(base: lake.Location, day: dt.date) -> _DaySnapshots:
    """Refresh the day's summaries, fill the history's gaps and query both snapshots of ``day``."""
    con = duckdb_connection()
    try:
        payments = build_transaction_summaries(con, base, day)
        if payments is None:
            raise FileNotFoundError(
                f"no transactions in the lake for {day.isoformat()} "
                f"({lake.partition_at(base, TRANSACTIONS.name, day).url}): ingest that day first"
            )
        labels = build_label_summary(con, base, day)
        built = ensure_history(con, base, day)

        history_days = load_history(con, base, day, "customer_country", "customer_id")
        load_history(con, base, day, "customer_merchant", None)
        load_history(con, base, day, "merchant", "merchant_id")
        load_history(con, base, day, "merchant_labels", "merchant_id")

        ts = snapshot_timestamp(day)
        customer = query_arrow(con, _customer_snapshot_sql(), [ts]).cast(CUSTOMER_SNAPSHOT_SCHEMA)
        merchant = query_arrow(con, _merchant_snapshot_sql(), [ts]).cast(MERCHANT_SNAPSHOT_SCHEMA)
    finally:
        con.close()
    return _DaySnapshots(customer, merchant, payments, labels, history_days, built)


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
    snapshots = _compute_snapshots(lake.root("lake", s), day)
    tables = {"customer": snapshots.customer, "merchant": snapshots.merchant}
    paths = {}
    for view in SNAPSHOT_VIEWS:
        loc = snapshot_location(view, day, s)
        lake.write_parquet(loc, tables[view])
        paths[view] = loc.url
    labels = snapshots.labels
    seconds = round(time.perf_counter() - started, 3)
    if snapshots.built:
        logger.info("built the missing summaries of earlier days: %s", ", ".join(snapshots.built))
    logger.info(
        "features of %s: %d customers and %d merchants from %d payments and %d days of history (%.1f s)",
        day,
        snapshots.customer.num_rows,
        snapshots.merchant.num_rows,
        snapshots.payments,
        snapshots.history_days,
        seconds,
    )
    return {
        "day": day.isoformat(),
        "snapshot_timestamp": snapshot_timestamp(day).isoformat(),
        "transactions": snapshots.payments,
        # Labels that land after this run count from the next day's snapshot on (never earlier).
        "labels_landed": labels is not None,
        "labels": labels[0] if labels else 0,
        "labels_without_payment": labels[1] if labels else 0,
        "history_days": snapshots.history_days,
        "summaries_built": snapshots.built,
        "rows": {view: table.num_rows for view, table in tables.items()},
        "paths": paths,
        "seconds": seconds,
    }
