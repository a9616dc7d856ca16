"""The ASOF point-in-time join against Feast's own join (``point_in_time_join``), on DuckDB.

Random snapshots and entity rows, built so that the edges come up often: entity rows on a
snapshot's instant, on the last instant of the TTL and one microsecond past it, before any
snapshot, with keys no snapshot has, null keys and repeated rows; two views, one without a TTL.
Each view holds one snapshot per key and instant, as the lake's do (between two of the same
instant, both joins may keep either). The whole store against Feast's is
``tests/integration/test_offline_store.py``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from feast.infra.offline_stores.ibis import point_in_time_join

from include.mlops.features import asof

TTL = dt.timedelta(days=2)
START = pd.Timestamp("2026-03-01", tz="UTC")
MICROSECOND = pd.Timedelta(microseconds=1)


def snapshots(rng: np.random.Generator, keys: int, days: int, key: str, feature: str) -> pd.DataFrame:
    """One row per key and day for a random half of the key-days, at each day's end."""
    grid = pd.DataFrame(
        [(f"{key}{k}", START + pd.Timedelta(days=d)) for k in range(keys) for d in range(days)],
        columns=[key, "event_timestamp"],
    )
    grid = grid[rng.random(len(grid)) < 0.5].reset_index(drop=True)
    grid[feature] = rng.integers(0, 1000, len(grid))
    return grid


def entity_rows(rng: np.random.Generator, custs: pd.DataFrame, rows: int) -> pd.DataFrame:
    """Entity rows at random instants, and at the edges of the customers' snapshots."""
    stamps = START - pd.Timedelta(days=1) + pd.to_timedelta(rng.integers(0, 9 * 86_400, rows), unit="s")
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{k}" for k in rng.integers(0, 12, rows)],  # c10, c11: no snapshot
            "merchant_id": [f"m{k}" for k in rng.integers(0, 5, rows)],
            "event_timestamp": stamps,
            "amount": rng.random(rows),
        }
    )
    edges = custs.sample(min(len(custs), rows // 4), random_state=int(rng.integers(1 << 30)))
    at_edges = pd.concat(
        [
            edges.assign(event_timestamp=edges["event_timestamp"] + offset)
            for offset in (pd.Timedelta(0), TTL, TTL + MICROSECOND, -MICROSECOND)
        ]
    )
    edge_rows = at_edges[["customer_id", "event_timestamp"]].assign(merchant_id="m1", amount=0.5)
    frame = pd.concat([frame, edge_rows, frame.head(7)], ignore_index=True)  # and repeated rows
    frame.loc[frame.index[:3], "customer_id"] = None
    frame["row"] = np.arange(len(frame))
    return frame


def tables(custs: pd.DataFrame, merchants: pd.DataFrame) -> list[asof.FeatureTable]:
    import ibis

    return [
        (ibis.memtable(custs), "event_timestamp", None, {"customer_id": "customer_id"}, ["spend"], TTL),
        (ibis.memtable(merchants), "event_timestamp", None, {"merchant_id": "merchant_id"}, ["risk"], None),
    ]


@pytest.mark.parametrize("seed", range(6))
def test_the_asof_join_returns_feasts_rows(seed: int) -> None:
    import ibis

    rng = np.random.default_rng(seed)
    custs = snapshots(rng, 10, 6, "c", "spend").rename(columns={"c": "customer_id"})
    merchants = snapshots(rng, 5, 6, "m", "risk").rename(columns={"m": "merchant_id"})
    entity = entity_rows(rng, custs, 400)

    got = asof.asof_join(entity.copy(), tables(custs, merchants), "event_timestamp").to_pandas()
    expected = point_in_time_join(ibis.memtable(entity), tables(custs, merchants)).to_pandas()

    assert list(got["row"]) == list(range(len(entity)))  # the entity rows' order, every row once
    assert list(got.columns) == list(expected.columns) == [*entity.columns, "spend", "risk"]
    expected = expected.sort_values("row", ignore_index=True)
    pd.testing.assert_frame_equal(got, expected)
    # Every kind of row came up: features found, expired by the TTL, and never there.
    assert got["spend"].notna().any() and got["spend"].isna().any() and got["risk"].notna().any()


def test_an_empty_entity_frame_gives_no_rows_with_the_columns() -> None:
    rng = np.random.default_rng(0)
    custs = snapshots(rng, 3, 2, "c", "spend").rename(columns={"c": "customer_id"})
    merchants = snapshots(rng, 3, 2, "m", "risk").rename(columns={"m": "merchant_id"})
    entity = entity_rows(rng, custs, 10).iloc[:0]
    got = asof.asof_join(entity, tables(custs, merchants), "event_timestamp").to_pandas()
    assert got.empty and list(got.columns) == [*entity.columns, "spend", "risk"]


def one_table(created: str | None = None, refs: tuple[str, ...] = ("spend",)) -> asof.FeatureTable:
    return (None, "event_timestamp", created, {"customer_id": "customer_id"}, list(refs), TTL)


@pytest.mark.parametrize(
    ("case", "views", "filter_by_created", "applies"),
    [
        ("plain views", [one_table(), one_table(refs=("risk",))], False, True),
        ("a created-timestamp column breaks Feast's ties", [one_table(created="created")], False, False),
        ("the created-timestamp filter", [one_table()], True, False),
        ("a feature in two views", [one_table(), one_table()], False, False),
        ("a feature named like an entity column", [one_table(refs=("amount",))], False, False),
        ("a feature named like the join's own columns", [one_table(refs=("__asof_ts_0",))], False, False),
    ],
)
def test_the_asof_join_is_used_only_where_it_is_feasts(
    case: str, views: list[asof.FeatureTable], filter_by_created: bool, applies: bool
) -> None:
    entity_columns = ["customer_id", "event_timestamp", "amount"]
    assert asof.asof_applies(views, entity_columns, filter_by_created) is applies, case
