"""A corpus of bad landing drops, each made by breaking one thing in a good simulated day.

Every entry writes a complete drop (data files, then ``_SUCCESS``) and names the problems the
ingestion must report: each entry of ``expect`` describes one problem line (fragments separated
by `` … `` appear in it in order) and there must be no other problem, so a drop rejected for an
unrelated reason fails its test.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from include.devtools.simulator import SimulationConfig, labels_for_day, transactions_for_day, write_drop
from include.mlops import lake
from include.mlops.core.schema import MAX_AMOUNT

if TYPE_CHECKING:
    from collections.abc import Callable

CONFIG = SimulationConfig(seed=7, rows_per_day=2000)
MARKER = "_SUCCESS"


def good_table(dataset: str, day: dt.date, config: SimulationConfig = CONFIG) -> pa.Table:
    """The simulator's good day for ``dataset``."""
    return transactions_for_day(day, config) if dataset == "transactions" else labels_for_day(day, config)


def good_file(dataset: str, day: dt.date, fmt: str, config: SimulationConfig = CONFIG) -> bytes:
    """The bytes of the simulator's data file of a good day, as a producer would write it."""
    with tempfile.TemporaryDirectory() as scratch:
        write_drop(scratch, dataset, day, good_table(dataset, day, config), fmt=fmt)
        return lake.read_bytes(lake.location(scratch).join(dataset, f"dt={day}", f"part-00000.{fmt}"))


def with_values(table: pa.Table, column: str, changes: dict[int, object]) -> pa.Table:
    """``table`` with some rows of one column set to other values (same type)."""
    values = table.column(column).to_pylist()
    for row, value in changes.items():
        values[row] = value
    index = table.schema.get_field_index(column)
    field = table.schema.field(index).with_nullable(True)
    return table.set_column(index, field, pa.array(values, type=field.type))


@dataclass(frozen=True)
class BadDrop:
    """One way a drop can be wrong, and what the rejection must say about it."""

    name: str
    dataset: str
    write: Callable[[str, dt.date], None]
    expect: tuple[str, ...]
    needs_history: bool = False


def mutated(dataset: str, change: Callable[[pa.Table], pa.Table], fmt: str = "parquet") -> Callable:
    """A writer of the good day with ``change`` applied, dropped the way the producer drops it."""

    def write(landing_url: str, day: dt.date) -> None:
        write_drop(landing_url, dataset, day, change(good_table(dataset, day)), fmt=fmt)

    return write


def raw(dataset: str, files: Callable[[dt.date], dict[str, bytes]]) -> Callable:
    """A writer of arbitrary files (then the marker) into the day's drop folder."""

    def write(landing_url: str, day: dt.date) -> None:
        folder = lake.location(landing_url).join(dataset, f"dt={day.isoformat()}")
        for name, data in files(day).items():
            lake.write_bytes(folder.join(name), data)
        lake.write_bytes(folder.join(MARKER), b"")

    return write


def _shift_timestamps(table: pa.Table, column: str, rows: list[int], by: dt.timedelta) -> pa.Table:
    values = table.column(column).to_pylist()
    return with_values(table, column, {r: values[r] + by for r in rows})


def _latin1_csv(day: dt.date) -> dict[str, bytes]:
    text = good_file("transactions", day, "csv")
    return {"part-00000.csv": text.replace(b'"grocery"', '"épicerie"'.encode("latin-1"), 1)}


def _unparseable_amount_csv(day: dt.date) -> dict[str, bytes]:
    lines = good_file("transactions", day, "csv").split(b"\n")
    header = lines[0].split(b",")
    amount = header.index(b'"amount"')
    row = lines[3].split(b",")
    row[amount] = b'"12,50 EUR"'
    lines[3] = b",".join(row)
    return {"part-00000.csv": b"\n".join(lines)}


CORPUS: tuple[BadDrop, ...] = (
    BadDrop(
        "duplicate_transaction_id",
        "transactions",
        mutated(
            "transactions", lambda t: with_values(t, "transaction_id", {1: t["transaction_id"][0].as_py()})
        ),
        ("transaction_id is unique: 2 of",),
    ),
    BadDrop(
        "null_customer_id",
        "transactions",
        mutated("transactions", lambda t: with_values(t, "customer_id", {5: None, 9: None})),
        ("customer_id is never null: 2 of",),
    ),
    BadDrop(
        "negative_amount",
        "transactions",
        mutated("transactions", lambda t: with_values(t, "amount", {3: -12.5})),
        ("amount is between 0.0 and 50000.0: 1 of … amount=-12.5",),
    ),
    BadDrop(
        "amount_above_ceiling",
        "transactions",
        mutated("transactions", lambda t: with_values(t, "amount", {4: MAX_AMOUNT * 3})),
        ("amount is between 0.0 and 50000.0: 1 of",),
    ),
    BadDrop(
        "unknown_currency",
        "transactions",
        mutated("transactions", lambda t: with_values(t, "currency", {2: "XBT"})),
        ("currency is one of … 1 of … 'XBT'",),
    ),
    BadDrop(
        "unknown_channel_in_csv",
        "transactions",
        mutated("transactions", lambda t: with_values(t, "channel", {6: "telepathy"}), fmt="csv"),
        ("channel is one of … 1 of … 'telepathy'",),
    ),
    BadDrop(
        "timestamp_outside_the_day",
        "transactions",
        mutated("transactions", lambda t: _shift_timestamps(t, "event_timestamp", [7], dt.timedelta(days=1))),
        ("event_timestamp is inside",),
    ),
    BadDrop(
        "timestamp_without_time_zone",
        "transactions",
        mutated(
            "transactions",
            lambda t: t.set_column(1, "event_timestamp", pc.cast(t["event_timestamp"], pa.timestamp("us"))),
        ),
        (
            "event_timestamp is of type timestamp[us, tz=UTC]: found datetime64",
            "event_timestamp is inside … could not be checked (event_timestamp holds values of another type)",
        ),
    ),
    BadDrop(
        "missing_column",
        "transactions",
        mutated("transactions", lambda t: t.drop_columns(["merchant_id"])),
        (
            "columns are exactly",
            "merchant_id is of type string: could not be checked (the column is missing)",
            "merchant_id is never null: could not be checked (the column is missing)",
        ),
    ),
    BadDrop(
        "extra_unknown_column",
        "transactions",
        mutated("transactions", lambda t: t.append_column("promo_code", pa.array(["SPRING"] * len(t)))),
        ("unknown promo_code",),
    ),
    BadDrop(
        "amount_as_text_in_parquet",
        "transactions",
        mutated("transactions", lambda t: t.set_column(4, "amount", pc.cast(t["amount"], pa.string()))),
        (
            "amount is of type double: found str",
            "amount is between 0.0 and 50000.0: could not be checked (amount holds values of another type)",
        ),
    ),
    BadDrop(
        "amount_that_does_not_parse_in_csv",
        "transactions",
        raw("transactions", _unparseable_amount_csv),
        ("amount is of type double: 1 of", "amount is between 0.0 and 50000.0: could not be checked"),
    ),
    BadDrop(
        "half_empty_day",
        "transactions",
        mutated("transactions", lambda t: t.slice(0, len(t) // 3)),
        ("rows (0.5x to 2x the median",),
        needs_history=True,
    ),
    BadDrop(
        "corrupt_parquet",
        "transactions",
        raw("transactions", lambda d: {"part-00000.parquet": good_file("transactions", d, "parquet")[:5000]}),
        ("part-00000.parquet: not a readable parquet file",),
    ),
    BadDrop(
        "empty_file",
        "transactions",
        raw("transactions", lambda d: {"part-00000.parquet": b""}),
        ("part-00000.parquet: the file is empty",),
    ),
    BadDrop(
        "latin1_csv",
        "transactions",
        raw("transactions", _latin1_csv),
        ("part-00000.csv: not UTF-8 text (byte 0xe9",),
    ),
    BadDrop(
        "binary_csv",
        "transactions",
        raw("transactions", lambda d: {"part-00000.csv": bytes(range(256)) * 8}),
        ("part-00000.csv: binary content",),
    ),
    BadDrop(
        "marker_without_data_files",
        "transactions",
        raw("transactions", lambda d: {}),
        ("no data files",),
    ),
    BadDrop(
        "wrong_file_type",
        "transactions",
        raw("transactions", lambda d: {"part-00000.json": b'[{"transaction_id": "t1"}]'}),
        ("part-00000.json: unsupported file type",),
    ),
    BadDrop(
        "data_in_a_sub_folder",
        "transactions",
        raw("transactions", lambda d: {"late/part-00001.parquet": good_file("transactions", d, "parquet")}),
        ("late/: a sub-folder",),
    ),
    BadDrop(
        "label_is_fraud_2",
        "labels",
        mutated("labels", lambda t: with_values(t, "is_fraud", {0: 2})),
        ("is_fraud is one of 0, 1: 1 of",),
    ),
    BadDrop(
        "duplicate_label",
        "labels",
        mutated("labels", lambda t: pa.concat_tables([t, t.slice(0, 1)])),
        ("transaction_id is unique: 2 of",),
    ),
    BadDrop(
        "label_reported_outside_the_day",
        "labels",
        mutated("labels", lambda t: _shift_timestamps(t, "reported_at", [0, 1], dt.timedelta(days=-2))),
        ("reported_at is inside",),
    ),
)
