"""Reading a landing drop into the schema's types, and naming every file that cannot be read."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from include.devtools.simulator import SimulationConfig, transactions_for_day
from include.mlops import lake
from include.mlops.core.schema import TRANSACTIONS
from include.mlops.ingest import UnreadableDrop, read_drop

if TYPE_CHECKING:
    from pathlib import Path

DAY = dt.date(2026, 1, 5)


def day_table(rows: int = 20) -> pa.Table:
    return transactions_for_day(DAY, SimulationConfig(seed=7, rows_per_day=rows))


def csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> lake.Location:
    return lake.location(str(tmp_path / "drop"))


def test_a_parquet_drop_in_two_files_reads_as_one_typed_table(folder: lake.Location) -> None:
    table = day_table()
    lake.write_parquet(folder.join("part-00000.parquet"), table.slice(0, 8))
    lake.write_parquet(folder.join("part-00001.parquet"), table.slice(8))
    lake.write_bytes(folder.join(lake.SUCCESS_MARKER), b"")
    lake.write_bytes(folder.join("_committed_123"), b"bookkeeping")

    contents = read_drop(folder, TRANSACTIONS)

    assert contents.table is not None and contents.table.equals(table)
    assert len(contents.frame) == table.num_rows
    assert [f.name for f in contents.files] == ["part-00000.parquet", "part-00001.parquet"]
    assert all(f.problem is None and len(f.sha256) == 64 for f in contents.files)


def test_a_csv_column_that_does_not_parse_keeps_its_bad_values_for_the_report(folder: lake.Location) -> None:
    table = day_table()
    text = table.set_column(
        table.schema.get_field_index("amount"),
        "amount",
        pa.array(["twelve" if i == 3 else str(v) for i, v in enumerate(table["amount"].to_pylist())]),
    )
    lake.write_bytes(folder.join("part-00000.csv"), csv_bytes(text))

    contents = read_drop(folder, TRANSACTIONS)

    assert contents.table is None  # not of the schema's types: the suite says why
    amount = contents.frame["amount"]
    assert amount[3] == "twelve"
    assert amount.drop(index=3).tolist() == table["amount"].to_pylist()[:3] + table["amount"].to_pylist()[4:]


def test_every_file_that_cannot_be_read_is_named(folder: lake.Location) -> None:
    lake.write_bytes(folder.join("a.parquet"), b"")
    lake.write_bytes(folder.join("b.parquet"), b"not parquet at all")
    lake.write_bytes(folder.join("c.csv"), b"transaction_id\x00\n")
    lake.write_bytes(folder.join("d.csv"), "transaction_id\nt\xe9".encode("latin-1"))
    lake.write_bytes(folder.join("e.json"), b"{}")
    lake.write_bytes(folder.join("nested", "part-00000.parquet"), b"")

    with pytest.raises(UnreadableDrop) as caught:
        read_drop(folder, TRANSACTIONS)

    problems = caught.value.problems
    assert problems[0] == "a.parquet: the file is empty (0 bytes)"
    assert problems[1].startswith("b.parquet: not a readable parquet file (")
    assert problems[2] == "c.csv: binary content (NUL bytes), not a CSV text file"
    assert problems[3] == "d.csv: not UTF-8 text (byte 0xe9 at offset 16); save the CSV as UTF-8"
    assert problems[4] == "e.json: unsupported file type; a drop holds only *.parquet or *.csv files"
    assert problems[5] == "nested/: a sub-folder; a drop holds its data files directly"
    assert [f.name for f in caught.value.files] == ["a.parquet", "b.parquet", "c.csv", "d.csv", "e.json"]
    assert caught.value.files[4].as_dict() == {
        "name": "e.json",
        "bytes": 2,
        "sha256": hashlib.sha256(b"{}").hexdigest(),
        "problem": problems[4],
    }


def test_a_marker_without_data_files_is_unreadable(folder: lake.Location) -> None:
    lake.write_bytes(folder.join(lake.SUCCESS_MARKER), b"")
    with pytest.raises(UnreadableDrop, match="marker but no data files"):
        read_drop(folder, TRANSACTIONS)
