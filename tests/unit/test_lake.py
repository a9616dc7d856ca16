"""The lake's catalogue: one spelling of every partition, and readers that never see a write in progress."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest

from include.mlops import lake
from include.mlops.core.settings import load_settings

if TYPE_CHECKING:
    from pathlib import Path

DAY = dt.date(2026, 1, 5)


def _table(n: int) -> pa.Table:
    return pa.table({"transaction_id": [f"t{i}" for i in range(n)], "amount": [float(i) for i in range(n)]})


def test_partitions_are_named_once_for_every_store(tmp_path: Path) -> None:
    s = load_settings({"MLOPS_HOME": str(tmp_path)})
    assert lake.partition("lake", "transactions", DAY, s).url == f"{tmp_path}/lake/transactions/dt=2026-01-05"
    assert lake.partition_file(lake.PREDICTIONS, DAY, s).url.endswith(
        "/predictions/dt=2026-01-05/part-00000.parquet"
    )
    assert lake.partition_url("s3://b/landing", "labels", "{{ ds }}") == "s3://b/landing/labels/dt={{ ds }}"
    assert (
        lake.partition_glob("s3://b/lake", "features/customer")
        == "s3://b/lake/features/customer/dt=*/part-*.parquet"
    )
    with pytest.raises(ValueError, match="unknown kind of store 'attic'"):
        lake.partition("attic", "transactions", DAY, s)


def test_a_crashed_write_left_beside_a_partition_is_never_read(tmp_path: Path) -> None:
    folder = lake.partition_at(lake.location(str(tmp_path)), "transactions", DAY)
    lake.write_parquet(folder.join(lake.DATA_FILE), _table(5))
    # What a kill -9 between a temporary write and its rename leaves: a truncated hidden file.
    data = lake.encode_parquet(_table(7))
    (tmp_path / "transactions" / "dt=2026-01-05" / ".tmp-0123-part-00000.parquet").write_bytes(data[:100])
    (tmp_path / "transactions" / "dt=2026-01-05" / "_SUCCESS").write_bytes(b"")
    assert [f.name for f in lake.data_files(folder)] == [lake.DATA_FILE]
    table = lake.read_table(folder)
    assert table is not None and table.num_rows == 5


def test_replacing_a_partition_leaves_one_whole_file(tmp_path: Path) -> None:
    folder = lake.partition_at(lake.location(str(tmp_path)), "predictions", DAY)
    lake.write_parquet(folder.join("part-00001.parquet"), _table(3))
    (tmp_path / "predictions" / "dt=2026-01-05" / ".tmp-dead-part-00000.parquet").write_bytes(b"PAR1")
    file = lake.replace_partition(folder, lake.encode_parquet(_table(4)))
    assert [f.name for f in lake.list_files(folder)] == [lake.DATA_FILE]
    assert lake.parquet_rows(file) == 4
    assert lake.read_table(folder).num_rows == 4


def test_partition_days_ignore_what_is_not_a_day(tmp_path: Path) -> None:
    base = lake.location(str(tmp_path))
    for name in ("dt=2026-01-06", "dt=2026-01-05", "dt=garbage", "notes"):
        (tmp_path / "labels" / name).mkdir(parents=True)
    assert lake.partition_days(base, "labels") == [DAY, DAY + dt.timedelta(days=1)]
    assert lake.read_table(lake.partition_at(base, "labels", DAY)) is None


def _leftover(folder: Path, name: str, digit: str = "a") -> Path:
    path = folder / f".tmp-{digit * 32}-{name}"
    path.write_bytes(b"PAR1 half a file")
    return path


def test_the_next_write_of_a_file_removes_what_a_killed_write_left(tmp_path: Path) -> None:
    folder = lake.partition_at(lake.location(str(tmp_path)), "transactions", DAY)
    lake.write_parquet(folder.join(lake.DATA_FILE), _table(5))
    local = tmp_path / "transactions" / "dt=2026-01-05"
    stale = [_leftover(local, lake.DATA_FILE, d) for d in "0f"]
    lake.write_parquet(folder.join(lake.DATA_FILE), _table(6))
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in local.iterdir()) == [lake.DATA_FILE]
    assert lake.parquet_rows(folder.join(lake.DATA_FILE)) == 6


def test_a_write_keeps_every_other_file_of_its_folder(tmp_path: Path) -> None:
    folder = lake.location(str(tmp_path / "reports"))
    lake.write_bytes(folder.join("verdict.json"), b"{}")
    kept = [
        _leftover(tmp_path / "reports", "drift.html"),  # another target's
        _leftover(tmp_path / "reports", "verdict.json.bak"),  # another name
        _leftover(tmp_path / "reports", "x-verdict.json"),
        tmp_path / "reports" / f".tmp-{'A' * 32}-verdict.json",  # not lowercase hex
        tmp_path / "reports" / f".tmp-{'a' * 31}-verdict.json",  # not 32 digits
        tmp_path / "reports" / ".tmp-dead-verdict.json",
        tmp_path / "reports" / "drift.html",
    ]
    for path in kept:
        path.write_bytes(b"kept")
    removed = _leftover(tmp_path / "reports", "verdict.json", "7")
    lake.write_bytes(folder.join("verdict.json"), b'{"ok": true}')
    assert all(p.read_bytes() == b"kept" for p in kept)
    assert not removed.exists()
    assert (tmp_path / "reports" / "verdict.json").read_bytes() == b'{"ok": true}'


def _predictions_dir(tmp_path: Path) -> Path:
    return tmp_path / "predictions" / "dt=2026-01-05"


def _streamed(loc: lake.Location, parts: list[pa.Table], fail_after: int | None = None) -> None:
    """Write ``parts`` through :func:`lake.write_parquet_stream`, failing after ``fail_after`` parts."""
    with lake.write_parquet_stream(loc, parts[0].schema) as writer:
        for i, part in enumerate(parts):
            if i == fail_after:
                raise RuntimeError("scoring failed midway")
            writer.write_table(part)


def test_a_streamed_file_is_the_file_written_at_once(tmp_path: Path) -> None:
    loc = lake.location(str(tmp_path)).join("predictions", "dt=2026-01-05", lake.DATA_FILE)
    _streamed(loc, [_table(10)])
    assert (_predictions_dir(tmp_path) / lake.DATA_FILE).read_bytes() == lake.encode_parquet(_table(10))
    whole = _table(10)
    _streamed(loc, [whole.slice(0, 4), whole.slice(4, 4), whole.slice(8)])
    assert lake.read_parquet(loc).equals(whole)
    assert sorted(p.name for p in _predictions_dir(tmp_path).iterdir()) == [lake.DATA_FILE]


def test_a_stream_that_fails_midway_leaves_the_old_file_and_nothing_else(tmp_path: Path) -> None:
    folder = lake.partition_at(lake.location(str(tmp_path)), "predictions", DAY)
    lake.write_parquet(folder.join(lake.DATA_FILE), _table(3))
    before = (_predictions_dir(tmp_path) / lake.DATA_FILE).read_bytes()
    with pytest.raises(RuntimeError, match="midway"):
        _streamed(folder.join(lake.DATA_FILE), [_table(5), _table(5)], fail_after=1)
    assert sorted(p.name for p in _predictions_dir(tmp_path).iterdir()) == [lake.DATA_FILE]
    assert (_predictions_dir(tmp_path) / lake.DATA_FILE).read_bytes() == before
    # A first write that fails leaves no file at all.
    with pytest.raises(RuntimeError, match="midway"):
        _streamed(folder.join("other.parquet"), [_table(5), _table(5)], fail_after=1)
    assert sorted(p.name for p in _predictions_dir(tmp_path).iterdir()) == [lake.DATA_FILE]


def test_replacing_a_partition_by_stream_removes_the_rest_only_on_success(tmp_path: Path) -> None:
    folder = lake.partition_at(lake.location(str(tmp_path)), "predictions", DAY)
    lake.write_parquet(folder.join("part-00001.parquet"), _table(3))
    with (
        pytest.raises(RuntimeError, match="midway"),
        lake.replace_partition_stream(folder, _table(1).schema) as writer,
    ):
        writer.write_table(_table(4))
        raise RuntimeError("scoring failed midway")
    assert [f.name for f in lake.list_files(folder)] == ["part-00001.parquet"]
    with lake.replace_partition_stream(folder, _table(1).schema) as writer:
        writer.write_table(_table(4))
        writer.write_table(_table(2))
    assert [f.name for f in lake.list_files(folder)] == [lake.DATA_FILE]
    assert lake.read_table(folder).num_rows == 6


def test_a_stream_to_s3_shows_the_whole_file_or_nothing(s3_bucket: str) -> None:
    folder = lake.location(f"s3://{s3_bucket}/lake/predictions/dt=2026-01-05")
    lake.write_parquet(folder.join(lake.DATA_FILE), _table(3))
    with pytest.raises(RuntimeError, match="midway"):
        _streamed(folder.join(lake.DATA_FILE), [_table(5), _table(5)], fail_after=1)
    assert [f.name for f in lake.list_files(folder)] == [lake.DATA_FILE]
    assert lake.read_parquet(folder.join(lake.DATA_FILE)).equals(_table(3))
    whole = _table(9)
    with lake.replace_partition_stream(folder, whole.schema) as writer:
        writer.write_table(whole.slice(0, 5))
        writer.write_table(whole.slice(5))
    assert [f.name for f in lake.list_files(folder)] == [lake.DATA_FILE]
    assert lake.read_table(folder).equals(whole)


def test_a_partition_is_read_in_tables_of_the_asked_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    folder = lake.partition_at(lake.location(str(tmp_path)), "serving_requests", DAY)
    loc_a, loc_b = folder.join("part-a.parquet"), folder.join("part-b.parquet")
    folder.fs.create_dir(folder.path)
    # Row groups of 4 rows: the tables cross row groups and files.
    pq.write_table(_table(10), loc_a.path, row_group_size=4)
    pq.write_table(_table(5), loc_b.path)
    (tmp_path / "serving_requests" / "dt=2026-01-05" / ".tmp-0123-part-c.parquet").write_bytes(b"PAR1")
    tables = list(lake.iter_tables(folder, 3))
    assert [t.num_rows for t in tables] == [3, 3, 3, 3, 3]
    assert pa.concat_tables(tables).equals(lake.read_table(folder))
    (only,) = lake.iter_tables(folder, 100, columns=["amount"])
    assert only.column_names == ["amount"] and only.num_rows == 15
    assert list(lake.iter_tables(lake.location(str(tmp_path / "nothing")), 3)) == []
    with pytest.raises(ValueError, match="positive"):
        next(lake.iter_tables(folder, 0))
