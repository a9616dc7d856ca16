"""The batched online stores over a real materialization: Feast's own stores write the same data,
read ours back, a rerun changes nothing, and online features still equal offline ones.

The project's ``feature_repo/`` selects the batched stores and the engine that hands them Arrow
batches (``arrow_write.py``) from the windowed offline store (``offline_store.py``); the stock
store here is built from a copy of its yaml whose ``online_store: type:`` is Feast's own ``sqlite``
or ``redis``, whose ``batch_engine: type:`` is Feast's ``local`` and whose ``offline_store: type:``
is Feast's ``duckdb``, everything else the same.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING

import pytest

from include.mlops import features as F
from include.mlops.core.settings import PROJECT_ROOT
from tests.integration.test_features import (
    assert_online_matches_offline,
    build,
    mismatches,
    online_view_values,
    redis_database,
    settings_for,
    simulate_lake,
    snapshot,
)

if TYPE_CHECKING:
    from pathlib import Path

    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration

__all__ = ["redis_database"]  # a fixture shared with test_features.py

BATCHED = {
    "sqlite": "include.mlops.features.online_stores.BatchedSqliteOnlineStore",
    "redis": "include.mlops.features.online_stores.BatchedRedisOnlineStore",
}
ENGINE = "include.mlops.features.arrow_write.ArrowWriteEngine"
OFFLINE = "include.mlops.features.offline_store.WindowedDuckDBOfflineStore"


def stock_settings(home: Path, kind: str, **settings: str) -> Settings:
    """Settings whose Feast store is Feast's own ``kind`` online store written by Feast's own local
    engine from Feast's own DuckDB offline store: the project's yaml with only the ``type:`` of
    ``online_store``, ``batch_engine`` and ``offline_store`` changed (and the latter's
    ``memory_limit`` left out), in a folder of its own (the yaml only: nothing is applied from
    it, so the registry stays the one the settings name)."""
    repo = home.parent / f"feast-{kind}-yaml"
    repo.mkdir(exist_ok=True)
    for name in ("feature_store.yaml", "feature_store.cluster.yaml"):
        text = (PROJECT_ROOT / "feature_repo" / name).read_text()
        text = text.replace(f"type: {BATCHED[kind]}", f"type: {kind}").replace(
            f"type: {ENGINE}", "type: local"
        )
        lines = text.replace(f"type: {OFFLINE}", "type: duckdb").splitlines(keepends=True)
        # Feast's DuckDB store has no memory limit of its own.
        (repo / name).write_text("".join(line for line in lines if "memory_limit:" not in line))
    written = "".join(p.read_text() for p in repo.iterdir())
    assert BATCHED[kind] not in written and ENGINE not in written and OFFLINE not in written
    return settings_for(home, MLOPS_FEAST_REPO=str(repo), **settings)


def stock_materialize(s: Settings, days: list[dt.date]) -> None:
    """Materialize ``days`` with the settings' store over exactly each day, as
    :func:`F.materialize_day` does, after creating its online tables (Feast's own ``update``)."""
    from feast.infra.online_stores.helpers import get_online_store_from_config

    store = F.feature_store(s)
    assert type(store._get_provider().batch_engine).__name__ == "LocalComputeEngine"
    assert type(store._get_provider().offline_store).__name__ == "DuckDBOfflineStore"
    online = get_online_store_from_config(store.config.online_store)
    online.update(store.config, [], store.list_feature_views(), [], store.list_entities(), partial=False)
    for day in days:
        start = F.snapshot_timestamp(day)
        end = start + dt.timedelta(days=1, microseconds=-1)
        with F.quiet_feast_calls():
            store.materialize(
                start_date=start, end_date=end, feature_views=[F.CUSTOMER_VIEW, F.MERCHANT_VIEW]
            )


def sqlite_tables(path: str) -> dict[str, list[tuple]]:
    """Every row of the SQLite online store at ``path``, per table, in key order."""
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            name: conn.execute(
                "SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts "
                f'FROM "{name}" ORDER BY entity_key, feature_name'
            ).fetchall()
            for name in names
        }


def redis_hashes(url: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the project in the Redis database at ``url``."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return {k: client.hgetall(k) for k in client.scan_iter() if k.endswith(F.PROJECT.encode())}
    finally:
        client.close()


def entities(s: Settings, day: dt.date) -> tuple[list[str], list[str]]:
    """The customers and merchants of the day's snapshots."""
    return sorted(snapshot(s, "customer", day)), sorted(snapshot(s, "merchant", day))


def test_sqlite_batched_store_writes_feasts_rows_and_feast_reads_them_back(mlops_home: Path) -> None:
    s = settings_for(mlops_home)
    days = simulate_lake(s, 1)
    build(s, days)
    engine = type(F.feature_store(s)._get_provider().batch_engine)
    assert f"{engine.__module__}.{engine.__name__}" == ENGINE, "the project's engine wrote the days"
    ours = sqlite_tables(s.feast_online_path)
    assert sum(len(rows) for rows in ours.values()) > 1000

    # Feast's own store, over our file, reads what ours reads.
    customers, merchants = entities(s, days[-1])
    values = online_view_values(s, customers, merchants)
    assert values["customer_txn_count_30d"].notna().any()
    reader = stock_settings(mlops_home, "sqlite")
    assert mismatches(online_view_values(reader, customers, merchants), values, list(values.columns)) == []

    # A rerun of the day leaves every row as it was; online still equals offline.
    assert F.materialize_day(days[-1], s)["materialized"] == [F.CUSTOMER_VIEW, F.MERCHANT_VIEW]
    assert sqlite_tables(s.feast_online_path) == ours
    assert_online_matches_offline(s, days[-1], sample=30)

    # Feast's own store materializes the same day into a file of its own: the same rows, cell for cell.
    stock_file = str(mlops_home.parent / "stock-online.db")
    stock_materialize(stock_settings(mlops_home, "sqlite", MLOPS_FEAST_ONLINE_PATH=stock_file), days)
    assert sqlite_tables(stock_file) == ours


def test_redis_batched_store_writes_feasts_hashes_and_feast_reads_them_back(
    mlops_home: Path, redis_database: str
) -> None:
    # The registry is Feast's SQL registry on a SQLite file: the PostgreSQL one has the cluster
    # profile's own test (test_features.py); here only the online store differs.
    cluster = {
        "MLOPS_PROFILE": "cluster",
        "MLOPS_REDIS_URL": redis_database,
        "MLOPS_FEAST_REGISTRY": f"sqlite:///{mlops_home.parent}/registry.sqlite",
    }
    s = settings_for(mlops_home, **cluster)
    days = simulate_lake(s, 1)
    build(s, days)
    ours = redis_hashes(redis_database)
    customers, merchants = entities(s, days[-1])
    assert len(ours) == len(customers) + len(merchants)

    stock = stock_settings(mlops_home, "redis", **cluster)
    values = online_view_values(s, customers, merchants)
    assert mismatches(online_view_values(stock, customers, merchants), values, list(values.columns)) == []

    # A rerun writes nothing new (Feast's Redis store skips a time it already holds).
    F.materialize_day(days[-1], s)
    assert redis_hashes(redis_database) == ours
    assert_online_matches_offline(s, days[-1], sample=30)

    # Feast's own store, from nothing: the same hashes, field for field.
    import redis

    client = redis.Redis.from_url(redis_database)
    client.delete(*ours)
    client.close()
    assert redis_hashes(redis_database) == {}
    stock_materialize(stock, days)
    assert redis_hashes(redis_database) == ours
