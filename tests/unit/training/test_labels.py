"""Each payment's label is its latest report, found by one join of the day's payments with the
reports of its label partitions."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from include.mlops.core.schema import LABEL
from include.mlops.training.labels import latest_labels

T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def _reports(rows: list[tuple[str, int, int]]) -> pa.Table:
    """``(transaction_id, label, hours after T0)`` per report, in reading order."""
    return pa.table(
        {
            "transaction_id": pa.array([r[0] for r in rows], pa.string()),
            LABEL: pa.array([r[1] for r in rows], pa.int8()),
            "reported_at": pa.array([T0 + dt.timedelta(hours=r[2]) for r in rows], pa.timestamp("us", "UTC")),
        }
    )


def test_the_latest_report_wins_and_a_payment_without_one_has_none() -> None:
    ids = pa.chunked_array([["a", "b"], ["c", "d"]])
    reports = _reports(
        [
            ("b", 0, 5),  # settled...
            ("x", 1, 1),  # another day's payment
            ("a", 1, 2),
            ("b", 1, 9),  # ...then charged back
            ("c", 0, 3),
        ]
    )
    label, duplicates = latest_labels(ids, reports)
    assert label.to_pylist() == [1, 1, 0, None]
    assert duplicates == 1


def test_reports_of_the_same_instant_keep_the_one_read_first() -> None:
    label, duplicates = latest_labels(
        pa.chunked_array([["a"]]), _reports([("a", 1, 4), ("a", 0, 4), ("a", 0, 1)])
    )
    assert label.to_pylist() == [1]
    assert duplicates == 2


def test_no_reports_leave_every_payment_unlabelled() -> None:
    empty = pa.table({"transaction_id": pa.array([], pa.string()), LABEL: pa.array([], pa.int8())})
    label, duplicates = latest_labels(pa.chunked_array([["a", "b"]]), empty)
    assert label.to_pylist() == [None, None] and label.type == pa.int8()
    assert duplicates == 0
