"""The batched online stores write exactly what Feast's own stores write (real SQLite, no server).

Each case hands the same rows (every scalar type, nulls, naive and aware times, an entity twice
in one batch) to Feast's ``SqliteOnlineStore`` and to ours, and compares the tables cell by cell.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING

import pytest
import yaml

from include.mlops.core.settings import PROJECT_ROOT
from include.mlops.features import quiet_feast_import

if TYPE_CHECKING:
    from pathlib import Path

UTC = dt.UTC
SQLITE_TYPE = "include.mlops.features.online_stores.BatchedSqliteOnlineStore"
REDIS_TYPE = "include.mlops.features.online_stores.BatchedRedisOnlineStore"


def view(types: dict | None = None, created_timestamp_column: str = ""):
    """A feature view with a column of each scalar type Feast's SQLite store distinguishes (or of
    ``types``: name to Feast type), its source with ``created_timestamp_column`` if given."""
    quiet_feast_import()
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

    customer = Entity(name="customer", join_keys=["customer_id"])
    types = types or {
        "amount": Float64,
        "ratio": Float32,
        "count": Int64,
        "small": Int32,
        "country": String,
        "flag": Bool,
        "seen_at": UnixTimestamp,
    }
    return FeatureView(
        name="customer_features",
        entities=[customer],
        schema=[Field(name="customer_id", dtype=String), *(Field(name=n, dtype=t) for n, t in types.items())],
        source=FileSource(
            path="unused.parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column=created_timestamp_column,
        ),
    )


def rows(n: int = 40) -> list[tuple]:
    """Feast's rows for ``n`` customers: values of every type, nulls, and two entities twice."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    out = []
    for i in range(n):
        values = {
            "amount": Value(double_val=i / 3 + 1e16 * (i == 7)),
            "ratio": Value(float_val=0.1 * i),
            "count": Value(int64_val=i - 20),
            "small": Value(int32_val=i),
            "country": Value(string_val=["DE", "FR", "", "Ünïcode"][i % 4]),
            "flag": Value(bool_val=i % 2 == 0),
            "seen_at": Value(unix_timestamp_val=1_700_000_000 + i),
        }
        if i % 5 == 0:
            values["amount"] = Value()  # a null
        key = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=f"c{i:04d}")])
        event = dt.datetime(2024, 3, 2, 0, 0, i % 3, tzinfo=UTC) if i % 2 else dt.datetime(2024, 3, 2, 1)
        created = None if i % 3 else dt.datetime(2024, 3, 2, 5, i % 60, tzinfo=UTC)
        out.append((key, values, event, created))
    # An entity again in the same multi-row statement as its first row, and one in the last rows.
    for position, (key, values, _, _) in ((2, out[0]), (len(out), out[-1])):
        again = {**values, "count": Value(int64_val=999 + position)}
        out.insert(position, (key, again, dt.datetime(2024, 3, 3, tzinfo=UTC), None))
    return out


def sqlite_store(kind: str, path: Path, fv):
    """A store of ``kind`` (Feast's type name) over the SQLite file ``path``, its table created."""
    from feast.infra.online_stores.helpers import get_online_store_from_config
    from feast.repo_config import RepoConfig

    config = RepoConfig(
        project="card_fraud",
        provider="local",
        registry=str(path.with_suffix(".registry.db")),
        online_store={"type": kind, "path": str(path)},
        entity_key_serialization_version=3,
    )
    store = get_online_store_from_config(config.online_store)
    store.update(config, [], [fv], [], [], partial=False)
    return store, config


def table(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts "
            "FROM card_fraud_customer_features ORDER BY entity_key, feature_name"
        ).fetchall()


def test_the_project_yaml_files_select_the_batched_stores() -> None:
    for name, kind in (("feature_store.yaml", SQLITE_TYPE), ("feature_store.cluster.yaml", REDIS_TYPE)):
        config = yaml.safe_load((PROJECT_ROOT / "feature_repo" / name).read_text())
        assert config["online_store"]["type"] == kind
        assert config["materialization"]["online_write_batch_size"] > 0


@pytest.mark.parametrize("kind", [SQLITE_TYPE, REDIS_TYPE])
def test_feast_resolves_each_class_path_to_its_config_and_store(kind: str) -> None:
    quiet_feast_import()
    from feast.infra.online_stores.helpers import get_online_store_from_config
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore
    from feast.repo_config import get_online_config_from_type

    config = get_online_config_from_type(kind)(type=kind)
    store = get_online_store_from_config(config)
    assert f"{type(store).__module__}.{type(store).__name__}" == kind
    assert isinstance(store, SqliteOnlineStore if "Sqlite" in kind else RedisOnlineStore)


def test_sqlite_rows_are_feasts_own_cell_for_cell(tmp_path: Path) -> None:
    fv = view()
    stock, stock_config = sqlite_store("sqlite", tmp_path / "stock.db", fv)
    ours, our_config = sqlite_store(SQLITE_TYPE, tmp_path / "ours.db", fv)
    data = rows()
    stock.online_write_batch(stock_config, fv, data, None)
    written = []
    ours.online_write_batch(our_config, fv, data, written.append)
    expected = table(tmp_path / "stock.db")
    assert len(expected) == 40 * 7
    assert table(tmp_path / "ours.db") == expected
    assert sum(written) == len(data)

    # Feast's own store reads our file, and a second write of the same batch changes nothing.
    keys = [row[0] for row in data]
    assert stock.online_read(our_config, fv, keys) == stock.online_read(stock_config, fv, keys)
    ours.online_write_batch(our_config, fv, data, None)
    assert table(tmp_path / "ours.db") == expected


def test_a_later_batch_overwrites_as_feasts_store_does(tmp_path: Path) -> None:
    # SQLite upserts whatever the batch holds (Feast keeps no event-time check there): an older
    # batch written later wins in both, which is why a backfill skips views holding a later day.
    from feast.protos.feast.types.Value_pb2 import Value

    fv = view()
    stores = [
        sqlite_store(kind, tmp_path / f"{n}.db", fv) for n, kind in (("s", "sqlite"), ("o", SQLITE_TYPE))
    ]
    later = rows(10)
    earlier = [
        (key, {**values, "count": Value(int64_val=-1)}, when - dt.timedelta(days=1), None)
        for key, values, when, _ in rows(6)
    ]
    for store, config in stores:
        store.online_write_batch(config, fv, later, None)
        store.online_write_batch(config, fv, earlier, None)
    ours = table(tmp_path / "o.db")
    assert ours == table(tmp_path / "s.db")
    counts = {key[-5:]: value for key, name, value, *_ in ours if name == "count"}
    assert counts[b"c0001"] == Value(int64_val=-1).SerializeToString()
    assert counts[b"c0008"] == Value(int64_val=-12).SerializeToString()


def test_redis_writes_only_rows_newer_than_the_stored_and_the_earlier_ones() -> None:
    quiet_feast_import()
    from include.mlops.features.online_stores import _newer_rows

    def stamp(seconds: int) -> bytes:
        from google.protobuf.timestamp_pb2 import Timestamp

        return Timestamp(seconds=seconds).SerializeToString()

    keys = [b"a", b"b", b"c", b"a", b"a", b"d"]
    nanos = [s * 1_000_000_000 for s in (10, 10, 10, 12, 11, 10)]
    stored = [None, stamp(10), stamp(9), None, None, stamp(11)]
    # a: new; b: same time as stored; c: newer than stored; a again: newer than the batch's a;
    # a a third time: older than the batch's latest a; d: older than stored.
    assert _newer_rows(keys, [(b"", n) for n in nanos], stored) == [0, 2, 3]


def test_redis_timestamps_are_encoded_as_feasts_store_encodes_them() -> None:
    quiet_feast_import()
    from feast.utils import make_tzaware
    from google.protobuf.timestamp_pb2 import Timestamp

    from include.mlops.features.online_stores import _encoded_timestamps

    data = rows(12)
    for (encoded, nanos), (_, _, when, _) in zip(_encoded_timestamps(r[2] for r in data), data, strict=True):
        expected = Timestamp()
        expected.FromDatetime(make_tzaware(when))
        assert encoded == expected.SerializeToString()
        assert nanos == expected.seconds * 1_000_000_000 + expected.nanos
