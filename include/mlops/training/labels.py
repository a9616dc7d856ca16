"""The label of each payment of a training day, read from the lake's labels partitions.

A payment's label is reported within :data:`~include.mlops.core.schema.MAX_LABEL_DELAY_DAYS`
days, so day ``D``'s labels are in the partitions ``D .. D+5``; consecutive days share five of
them and each file is read once. A payment reported twice (settled, then charged back) keeps its
latest report; a payment with no report is an error, never a silent 0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.mlops import features, lake
from include.mlops.core.schema import LABEL, LABELS, MAX_LABEL_DELAY_DAYS, TRANSACTIONS
from include.mlops.training.lineage import partition_fingerprint
from include.mlops.training.window import TrainingDataError, day_range, partition_files

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa

_LABEL_COLUMNS = ["transaction_id", LABEL, "reported_at"]


def _read_partition(
    base: lake.Location, dataset: str, day: dt.date, columns: list[str] | None = None
) -> tuple[pa.Table, list[dict]]:
    """A lake partition as one table, with the fingerprint of each file (each file is read once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, prints = [], []
    for loc in partition_files(base, dataset, day):
        data = lake.read_bytes(loc)
        table = pq.read_table(pa.BufferReader(data), columns=columns)
        tables.append(table)
        prints.append(partition_fingerprint(dataset, day, loc, data, table.num_rows))
    if not tables:
        raise TrainingDataError(f"no {dataset} partition for {day} under {base.join(dataset).url}")
    return (pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]), prints


@dataclass(frozen=True)
class LabelledDay:
    """One day's payments with their label, the files read for it and its duplicate labels."""

    day: dt.date
    table: pa.Table
    fingerprints: list[dict]
    duplicate_labels: int


class _LabelReports:
    """The labels partitions that can concern one day's payments, read while the days move forward.

    Labels of day ``D``'s payments are in the partitions ``D .. D+5`` (capped at ``labels_until``).
    Consecutive days share five of them, so they stay cached and each file is read once.
    """

    def __init__(self, base: lake.Location, labels_until: dt.date) -> None:
        self.base = base
        self.labels_until = labels_until
        self.cache: dict[dt.date, pa.Table] = {}
        self.seen: set[str] = set()

    def for_payments_of(self, day: dt.date) -> tuple[pa.Table, list[dict]]:
        """The label reports of the partitions of ``day .. day+5``, and the files read for the first time."""
        import pyarrow as pa

        last = min(day + dt.timedelta(days=MAX_LABEL_DELAY_DAYS), self.labels_until)
        wanted = day_range(day, last)
        for old in [d for d in self.cache if d not in wanted]:
            del self.cache[old]
        prints: list[dict] = []
        for d in wanted:
            if d not in self.cache and partition_files(self.base, LABELS.name, d):
                table, label_prints = _read_partition(self.base, LABELS.name, d, _LABEL_COLUMNS)
                self.cache[d] = pa.table(
                    {
                        "transaction_id": table.column("transaction_id").cast(pa.string()),
                        LABEL: table.column(LABEL).cast(pa.int8()),
                        "reported_at": table.column("reported_at"),
                    }
                )
                prints += [p for p in label_prints if p["url"] not in self.seen]
                self.seen.update(p["url"] for p in label_prints)
        present = [self.cache[d] for d in wanted if d in self.cache]
        if present:
            return pa.concat_tables(present, promote_options="permissive"), prints
        none = pa.table({"transaction_id": pa.array([], pa.string()), LABEL: pa.array([], pa.int8())})
        return none, prints


def latest_labels(ids: pa.ChunkedArray, reports: pa.Table) -> tuple[pa.Array, int]:
    """The label of each payment of ``ids`` (null when none), from its latest report; and how many
    payments were reported more than once.

    One DuckDB hash join of the day's payments with the reports of its label partitions (about
    six times as many rows), then the latest report per payment; among reports of the same
    instant, the one read first wins.
    """
    import numpy as np
    import pyarrow as pa

    if not reports.num_rows:
        return pa.nulls(len(ids), pa.int8()), 0
    payments = pa.table({"transaction_id": ids, "position": np.arange(len(ids), dtype=np.int64)})
    reports = reports.append_column("report", pa.array(np.arange(reports.num_rows, dtype=np.int64)))
    con = features.duckdb_connection()
    try:
        con.register("payments", payments)
        con.register("reports", reports)
        matched = con.sql(
            f"SELECT p.position, coalesce(r.{LABEL}, -1)::TINYINT AS label, r.report, "
            "coalesce(epoch_us(r.reported_at), -9223372036854775807) AS reported "
            "FROM reports r JOIN payments p USING (transaction_id)"
        ).to_arrow_table()
    finally:
        con.close()
    position, label, report, reported = (matched.column(i).to_numpy() for i in range(4))
    # Per payment: the latest report first, then the one read first.
    order = np.lexsort((report, -reported, position))
    position, label = position[order], label[order]
    first = np.ones(len(position), dtype=bool)
    first[1:] = position[1:] != position[:-1]
    winner = np.full(len(ids), -1, dtype=np.int8)
    winner[position[first]] = label[first]
    return pa.array(winner, mask=winner < 0), int(len(position) - first.sum())


def labelled_days(base: lake.Location, days: list[dt.date], labels_until: dt.date) -> Iterator[LabelledDay]:
    """For each day: its payments with their label (Arrow), the files read, and duplicate labels.

    Everything stays in Arrow (a 1M-row day costs about a second). Raises
    :class:`TrainingDataError` listing the payments without a label, once every day was read.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    reports = _LabelReports(base, labels_until)
    unlabelled: list[tuple[dt.date, int, list[str]]] = []
    for day in days:
        payments, prints = _read_partition(base, TRANSACTIONS.name, day)
        day_reports, label_prints = reports.for_payments_of(day)
        ids = payments.column("transaction_id")
        label, duplicates = latest_labels(ids, day_reports)
        if label.null_count:
            examples = ids.filter(pc.is_null(label)).slice(0, 3).to_pylist()
            unlabelled.append((day, label.null_count, examples))
            continue
        table = payments.append_column(LABEL, label.cast(pa.int8()))
        yield LabelledDay(day, table, prints + label_prints, duplicates)
    if unlabelled:
        detail = "; ".join(f"{d}: {n} payments (e.g. {', '.join(map(str, ex))})" for d, n, ex in unlabelled)
        raise TrainingDataError(
            f"payments without a label in the labels partitions up to {labels_until} under "
            f"{base.join(LABELS.name).url}: {detail}. Every payment of a fully labelled day must be "
            f"labelled within {MAX_LABEL_DELAY_DAYS} days: check the labels feed before training."
        )
