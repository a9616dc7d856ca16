"""Small additive summaries of each day, so a day's snapshot reads 31 of them instead of 30 days of payments.

``<lake>/features/_daily/<version>/<kind>/dt=D/``: additive statistics per customer and country,
the distinct customer-merchant pairs (as 64-bit keys), per merchant, an index of which merchant
each payment went to, and the labels reported that day per merchant (attributed through the
indexes of ``D-5 .. D``). A missing summary of an earlier day (a backfill out of order) is built
from its lake partition on the way. Amounts are summed as integer cents, so sums are exact
whatever order DuckDB's threads add them in.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from include.mlops import lake
from include.mlops.core.schema import LABELS, MAX_LABEL_DELAY_DAYS, TRANSACTIONS
from include.mlops.features.contract import HISTORY_DAYS, NIGHT_END_HOUR, SMALL_AMOUNT, day_start
from include.mlops.features.engine import query_arrow
from include.mlops.features.keys import stable_key

if TYPE_CHECKING:
    import duckdb


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


def _day_bounds(day: dt.date) -> list[dt.datetime]:
    return [day_start(day), day_start(day + dt.timedelta(days=1))]


# The columns of a lake transactions partition that the summaries read.
_TRANSACTION_COLUMNS = (
    "transaction_id",
    "event_timestamp",
    "customer_id",
    "merchant_id",
    "amount",
    "country",
    "channel",
)


def build_transaction_summaries(
    con: duckdb.DuckDBPyConnection, base: lake.Location, day: dt.date
) -> int | None:
    """Write the transaction summaries of ``day``; the number of payments, or None without data.

    ``base`` is the lake root: its transactions partition of ``day`` is read and the summaries are
    written under it, each file atomically. ``con`` comes from
    :func:`~include.mlops.features.engine.duckdb_connection`.
    """
    tx = lake.read_table(lake.partition_at(base, TRANSACTIONS.name, day), list(_TRANSACTION_COLUMNS))
    if tx is None:
        return None
    rows = _stage_payments(con, tx, day)
    customer = _customer_country(con)
    payments = _payment_index(con)
    pairs = _customer_merchant_pairs(con)
    merchant = query_arrow(
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


def _stage_payments(con: duckdb.DuckDBPyConnection, tx: pa.Table, day: dt.date) -> int:
    """Copy the day's payments into DuckDB table ``tx`` with the flags the summaries count; how many."""
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
    return int(con.sql("SELECT count(*) FROM tx").fetchall()[0][0])


def _customer_country(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The ``customer_country`` summary of the staged payments, with each customer's stable key."""
    customer = query_arrow(
        con,
        """
        SELECT customer_id, country, count(*) AS n, sum(cents) AS cents, sum(cents * cents) AS cents_sq,
               count(*) FILTER (WHERE night) AS night_n,
               count(*) FILTER (WHERE online) AS online_n,
               count(*) FILTER (WHERE small) AS small_n
        FROM tx GROUP BY customer_id, country ORDER BY customer_id, country""",
    )
    return customer.add_column(1, "customer_key", stable_key(customer.column("customer_id")))


def _payment_index(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The ``payments`` summary: the merchant of each staged payment, by payment key."""
    payments = query_arrow(con, "SELECT transaction_id, merchant_id FROM tx")
    return pa.table(
        {
            "transaction_key": stable_key(payments.column("transaction_id")),
            "merchant_id": payments["merchant_id"],
        }
    ).sort_by("transaction_key")


def _customer_merchant_pairs(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The ``customer_merchant`` summary: the distinct pairs of the staged payments, as keys."""
    pairs = query_arrow(con, "SELECT DISTINCT customer_id, merchant_id FROM tx")
    return pa.table(
        {
            "customer_key": stable_key(pairs.column("customer_id")),
            "merchant_key": stable_key(pairs.column("merchant_id")),
        }
    ).sort_by([("customer_key", "ascending"), ("merchant_key", "ascending")])


def build_label_summary(
    con: duckdb.DuckDBPyConnection, base: lake.Location, day: dt.date
) -> tuple[int, int] | None:
    """Write the labels-per-merchant summary of ``day``: (labels, labels whose payment was not found).

    None when the lake under ``base`` has no labels partition of ``day``. The payment indexes of
    the days those labels may concern are built from the lake on the way when missing.
    """
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
    pay = _payment_indexes(con, base, day)
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
    table = query_arrow(
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


def _payment_indexes(con: duckdb.DuckDBPyConnection, base: lake.Location, day: dt.date) -> pa.Table:
    """The payment indexes of the days that the labels reported on ``day`` may concern, as one table."""
    # Labels of day D concern payments of D-5 .. D-1; D itself costs nothing more and tolerates a
    # same-day chargeback.
    indexes = []
    for back in range(MAX_LABEL_DELAY_DAYS + 1):
        paid = day - dt.timedelta(days=back)
        index = _read_summary(base, "payments", paid)
        if index is None and build_transaction_summaries(con, base, paid) is not None:
            index = _read_summary(base, "payments", paid)
        if index is not None:
            indexes.append(index)
    return pa.concat_tables(indexes) if indexes else _SUMMARY_SCHEMAS["payments"].empty_table()


def ensure_history(con: duckdb.DuckDBPyConnection, base: lake.Location, day: dt.date) -> list[str]:
    """Build the summaries of the 30 days before ``day`` that are missing but have lake data.

    Returns what was built, as ``transactions:<day>`` and ``labels:<day>``.
    """
    built = []
    for back in range(1, HISTORY_DAYS + 1):
        past = day - dt.timedelta(days=back)
        have_payments = all(lake.exists(_summary_location(base, k, past)) for k in _TRANSACTION_SUMMARIES)
        if not have_payments and build_transaction_summaries(con, base, past) is not None:
            built.append(f"transactions:{past.isoformat()}")
        have_labels = all(lake.exists(_summary_location(base, k, past)) for k in _LABEL_SUMMARIES)
        if not have_labels and build_label_summary(con, base, past) is not None:
            built.append(f"labels:{past.isoformat()}")
    return built


def load_history(
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
