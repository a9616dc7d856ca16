"""Materialization from Arrow: every value serialized as Feast's own conversion serializes it, and the
SQLite store's rows from an Arrow batch equal Feast's store's rows from Feast's conversion, cell by
cell (real SQLite, no server). The whole engine against Feast's is in tests/integration."""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
import yaml

from include.mlops.core.settings import PROJECT_ROOT
from include.mlops.features import quiet_feast_import
from tests.unit.features.test_online_stores import SQLITE_TYPE, sqlite_store, table
from tests.unit.features.test_online_stores import view as online_store_view

if TYPE_CHECKING:
    from pathlib import Path

ENGINE = "include.mlops.features.arrow_write.ArrowWriteEngine"
UTC = dt.UTC

FLOATS = [0.0, -0.0, 1 / 3, -2.5e-310, 1e16 / 3, math.inf, -math.inf, math.nan, None, 42.0]
"""Doubles Feast must serialize, a NaN and a null among them (both an empty ``Value``)."""


def view():
    """A feature view with a column of each scalar type, an ``Int64`` one with nulls among them, its
    source with a created-time column."""
    quiet_feast_import()
    from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

    types = {
        "amount": Float64,
        "count": Int64,
        "gaps": Int64,
        "country": String,
        "ratio": Float32,
        "small": Int32,
        "flag": Bool,
        "seen_at": UnixTimestamp,
    }
    return online_store_view(types, created_timestamp_column="created")


def batch(n: int = 40) -> pa.RecordBatch:
    """``n`` rows of every column of :func:`view`, in the Arrow types the lake's snapshots have."""
    stamp = pa.timestamp("us", tz="UTC")
    return pa.RecordBatch.from_pydict(
        {
            "customer_id": pa.array([f"c{i:04d}" for i in range(n)], pa.string()),
            "event_timestamp": pa.array(
                [dt.datetime(2024, 3, 2, i % 3, tzinfo=UTC) for i in range(n)], stamp
            ),
            "created": pa.array([dt.datetime(2024, 3, 3, 5, i % 60, tzinfo=UTC) for i in range(n)], stamp),
            "amount": pa.array([FLOATS[i % len(FLOATS)] for i in range(n)], pa.float64()),
            "count": pa.array([(i - 20) * 7**i % 2**40 - 2**39 for i in range(n)], pa.int64()),
            "gaps": pa.array([None if i % 4 == 0 else i for i in range(n)], pa.int64()),
            "country": pa.array([["DE", "", None, "Ünïcode"][i % 4] for i in range(n)], pa.string()),
            "ratio": pa.array([None if i % 6 == 0 else 0.1 * i for i in range(n)], pa.float32()),
            "small": pa.array(list(range(n)), pa.int32()),
            "flag": pa.array([i % 3 == 0 for i in range(n)], pa.bool_()),
            "seen_at": pa.array(
                [dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=i) for i in range(n)], stamp
            ),
        }
    )


def join_keys(fv) -> dict:
    return {e.name: e.dtype.to_value_type() for e in fv.entity_columns}


def test_every_value_is_serialized_as_feasts_conversion_serializes_it() -> None:
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.utils import _convert_arrow_to_proto

    from include.mlops.features.arrow_write import encode_batch

    fv, rows = view(), batch()
    feast_rows = _convert_arrow_to_proto(rows, fv, join_keys(fv))
    encoded = encode_batch(rows, fv, join_keys(fv))
    assert len(encoded) == len(feast_rows) == 40
    assert encoded.entity_keys == [r[0] for r in feast_rows]
    assert encoded.event_timestamps == [r[2] for r in feast_rows]
    assert encoded.created_timestamps == [r[3] for r in feast_rows]
    assert [name for name, _, _ in encoded.features] == [f.name for f in fv.features]
    for name, values, texts in encoded.features:
        protos = [r[1][name] for r in feast_rows]
        assert values == [p.SerializeToString() for p in protos], name
        assert texts == [extract_text_and_num(p, False)[0] for p in protos], name
    amounts = dict(zip(FLOATS[:10], encoded.features[0][1][:10], strict=False))
    assert amounts[None] == b"" and len(amounts[0.0]) == 9, "a null is an empty Value, 0.0 a set one"


def test_a_store_writes_from_arrow_the_rows_feasts_store_writes_from_feasts_conversion(
    tmp_path: Path,
) -> None:
    from feast.utils import _convert_arrow_to_proto

    fv, rows = view(), batch()
    stock, stock_config = sqlite_store("sqlite", tmp_path / "stock.db", fv)
    ours, our_config = sqlite_store(SQLITE_TYPE, tmp_path / "ours.db", fv)
    stock.online_write_batch(stock_config, fv, _convert_arrow_to_proto(rows, fv, join_keys(fv)), None)
    ours.online_write_arrow(our_config, fv, rows, join_keys(fv))
    expected = table(tmp_path / "stock.db")
    assert len(expected) == 40 * 8
    assert table(tmp_path / "ours.db") == expected
    ours.online_write_arrow(our_config, fv, rows, join_keys(fv))
    assert table(tmp_path / "ours.db") == expected, "a rerun writes the same rows"


def test_the_project_yaml_files_select_the_engine_and_feast_resolves_it() -> None:
    quiet_feast_import()
    from feast.infra.compute_engines.local.compute import LocalComputeEngine
    from feast.repo_config import get_batch_engine_config_from_type

    for name in ("feature_store.yaml", "feature_store.cluster.yaml"):
        config = yaml.safe_load((PROJECT_ROOT / "feature_repo" / name).read_text())
        assert config["batch_engine"]["type"] == ENGINE
    assert get_batch_engine_config_from_type(ENGINE)().type == ENGINE
    from include.mlops.features.arrow_write import ArrowWriteEngine

    assert issubclass(ArrowWriteEngine, LocalComputeEngine)


@pytest.mark.parametrize("value", [0.0, -0.0, 1e-320, 1.5, -1e308, math.inf, -math.inf])
def test_a_double_is_the_protobuf_encoding_of_double_val(value: float) -> None:
    quiet_feast_import()
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.value_type import ValueType

    from include.mlops.features.arrow_write import encode_column

    values, texts = encode_column(pa.array([value]), ValueType.DOUBLE)
    assert values == [Value(double_val=value).SerializeToString()] and texts == [str(value)]
