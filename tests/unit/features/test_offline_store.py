"""The windowed offline store's parts: the window of an entity frame, the reader's filters, DuckDB's
settings. The whole store against Feast's own is ``tests/integration/test_offline_store.py``."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64

from include.mlops.features import offline_store as O

if TYPE_CHECKING:
    from collections.abc import Iterator

UTC = dt.UTC


def view(name: str, ttl: dt.timedelta | None, path: str = "unused.parquet") -> FeatureView:
    source = FileSource(
        name=f"{name}_source", path=path, timestamp_field="event_timestamp", tags={"snapshot": name}
    )
    return FeatureView(
        name=name,
        entities=[Entity(name="customer", join_keys=["customer_id"])],
        schema=[Field(name="spend", dtype=Float64)],
        source=source,
        ttl=ttl,
    )


def test_the_window_runs_from_the_earliest_row_less_the_longest_ttl_to_the_latest() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "event_timestamp": [
                dt.datetime(2024, 3, 5, 12, tzinfo=UTC),
                dt.datetime(2024, 3, 2, 6, tzinfo=UTC),
                pd.NaT,
            ],
        }
    )
    views = [view("short", dt.timedelta(days=1)), view("long", dt.timedelta(days=2))]
    assert O.entity_window(frame, views) == (
        dt.datetime(2024, 2, 29, 6, tzinfo=UTC),
        dt.datetime(2024, 3, 5, 12, tzinfo=UTC),
    )
    # A view without a TTL can use any earlier row; no rows, no window.
    assert O.entity_window(frame, [*views, view("forever", None)]) == (
        None,
        dt.datetime(2024, 3, 5, 12, tzinfo=UTC),
    )
    assert O.entity_window(frame.iloc[:0], views) == (None, None)
    naive = frame.assign(event_timestamp=frame["event_timestamp"].dt.tz_localize(None))
    assert O.entity_window(naive, views) == O.entity_window(frame, views)


@pytest.fixture
def snapshot_days(tmp_path: Path) -> Path:
    """Customer snapshots of 2024-03-01..05 (day D stamped D+1 00:00), and a file no reader can
    parse in the folder of 2024-03-20."""
    for offset in range(5):
        day = dt.date(2024, 3, 1) + dt.timedelta(days=offset)
        folder = tmp_path / "customer" / f"dt={day}"
        folder.mkdir(parents=True)
        stamp = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=UTC)
        pq.write_table(
            pa.table(
                {
                    "customer_id": ["a", "b"],
                    "event_timestamp": [stamp, stamp],
                    "spend": [offset, 10.0 + offset],
                }
            ),
            folder / "part-00000.parquet",
        )
    junk = tmp_path / "customer" / "dt=2024-03-20"
    junk.mkdir()
    (junk / "part-00000.parquet").write_bytes(b"not a parquet file")
    return tmp_path


def test_the_reader_keeps_the_window_and_never_opens_the_other_days(snapshot_days: Path) -> None:
    source = view(
        "customer", dt.timedelta(days=2), str(snapshot_days / "customer" / "dt=*" / "part-*.parquet")
    ).batch_source
    read = O.window_reader(dt.datetime(2024, 3, 3, tzinfo=UTC), dt.datetime(2024, 3, 5, 8, tzinfo=UTC))
    rows = read(source, str(snapshot_days)).to_pandas()
    # The snapshots of 03-02, 03-03 and 03-04 (stamped 03-03, 03-04, 03-05 00:00), both bounds in.
    assert sorted(rows["spend"]) == [1.0, 2.0, 3.0, 11.0, 12.0, 13.0]
    with pytest.raises(Exception, match="dt=2024-03-20"):
        O.window_reader(None, dt.datetime(2024, 3, 25, tzinfo=UTC))(source, str(snapshot_days)).to_pandas()


@pytest.fixture
def duckdb_settings() -> Iterator[None]:
    """The settings of ibis's default DuckDB connection, put back after the test."""
    import ibis

    con = ibis.get_backend()
    before = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
    yield
    con.raw_sql(f"SET memory_limit = '{before}'")


def test_the_store_sets_duckdbs_memory_limit_and_spill_folder_once_and_again(duckdb_settings: None) -> None:
    import ibis

    config = O.WindowedDuckDBOfflineStoreConfig(memory_limit="300MB")
    assert config.type == "include.mlops.features.offline_store.WindowedDuckDBOfflineStore"
    con = ibis.get_backend()
    for _ in range(2):  # DuckDB refuses to set a used spill folder again: the store sets it once
        O.configure_duckdb(config)
        limit, folder = con.raw_sql(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
        assert limit == "286.1 MiB" and folder == str(Path(tempfile.gettempdir()) / "mlops-duckdb")
