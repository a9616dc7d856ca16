"""Feast's SQLite and Redis online stores with batched writes, chosen by ``online_store: type:``.

Feast's SQLite store writes a materialization one ``INSERT`` statement per feature value, each a
call from Python into SQLite; its Redis store encodes every field name and timestamp again for
each entity. The stores here write the very rows Feast's would (same tables, keys, serialized
values, timestamps, upsert, and Redis's deduplication by event time): SQLite as one
``executemany`` of multi-row upserts per batch, in Feast's one transaction per batch; Redis as
one pipeline per batch, each view's field names and each distinct timestamp encoded once.
Everything else (reads, tables, teardown) is Feast's own, so a store configured with plain
``type: sqlite`` or ``type: redis`` reads what these wrote, and the other way round.
Materialization still hands them ``online_write_batch_size`` rows at a time, and a batch is
written as it is streamed: memory does not grow with the day.

Feast imports this module (and Feast with it) by the class path in ``feature_repo/feature_store*.yaml``
when it builds a store; the pipeline never imports it.
"""

from __future__ import annotations

import itertools
import sqlite3
from typing import TYPE_CHECKING, Any, Literal

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import (
    _mmh3,
    _redis_key,
    compute_table_id,
    compute_versioned_name,
    extract_text_and_num,
)
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.utils import make_tzaware, to_naive_utc
from google.protobuf.timestamp_pb2 import Timestamp

from include.mlops.features import arrow_write

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Iterable, Iterator, Sequence

    import pyarrow as pa
    from feast import FeatureView
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.repo_config import RepoConfig
    from feast.value_type import ValueType

    Row = tuple[EntityKey, dict[str, Value], dt.datetime, dt.datetime | None]

_MODULE = "include.mlops.features.online_stores"

_ROWS_PER_STATEMENT = 50
"""Values upserted per SQLite statement: a third less CPU than one per statement (300 parameters,
far under SQLite's limit)."""


class BatchedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Feast's SQLite online store settings (``path``...), selecting :class:`BatchedSqliteOnlineStore`."""

    type: Literal["include.mlops.features.online_stores.BatchedSqliteOnlineStore"] = (  # type: ignore[assignment]
        f"{_MODULE}.BatchedSqliteOnlineStore"
    )


class BatchedSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store, writing a batch as a few thousand statements, not one per value.

    A row is what Feast's store writes: the serialized entity key, the feature name, the value's
    protobuf bytes, its text, the event and created timestamps (naive UTC, stored through Feast's
    SQLite adapter), upserted on ``(entity_key, feature_name)`` in the batch's order, one
    transaction per batch. The rows are built as SQLite takes them (``executemany`` over a
    generator, :data:`_ROWS_PER_STATEMENT` per statement), so a batch is never held twice. A rerun
    writes the same rows again. The options this project does not use (vector search, the
    ``value_num`` column) take Feast's own write.
    """

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Upsert ``data`` (Feast's rows of one batch) into the view's table in one transaction."""
        if _feasts_own_write(config.online_store):
            super().online_write_batch(config, table, data, progress)
            return
        self._upsert(config, table, _sqlite_rows(data, config.entity_key_serialization_version))
        if progress:
            progress(len(data))

    def online_write_arrow(
        self, config: RepoConfig, table: FeatureView, batch: pa.RecordBatch, join_keys: dict[str, ValueType]
    ) -> None:
        """Upsert the rows of ``batch`` (an Arrow batch of the view's source) that
        :meth:`online_write_batch` would upsert for Feast's conversion of it, without that
        conversion (:mod:`.arrow_write`)."""
        if _feasts_own_write(config.online_store) or not arrow_write.is_feature_view(table):
            self.online_write_batch(config, table, arrow_write.proto_rows(batch, table, join_keys), None)
            return
        encoded = arrow_write.encode_batch(batch, table, join_keys)
        self._upsert(config, table, _encoded_sqlite_rows(encoded, config.entity_key_serialization_version))

    def _upsert(self, config: RepoConfig, table: FeatureView, rows: Iterator[tuple]) -> None:
        """Upsert ``rows`` (SQLite rows in Feast's layout) into the view's table in one transaction."""
        conn = self._get_conn(config)
        name = compute_table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
        rest: list[tuple] = []
        with conn:
            conn.executemany(
                _upsert_statement(name, _ROWS_PER_STATEMENT), _groups(rows, _ROWS_PER_STATEMENT, rest)
            )
            conn.executemany(_upsert_statement(name), rest)


def _feasts_own_write(store: Any) -> bool:
    """Whether the SQLite store uses options this project does not (vector search, the
    OpenAI-compatible store): those batches take Feast's own write."""
    return bool(store.vector_enabled or getattr(store, "enable_openai_compatible_store", False))


def _upsert_statement(table_name: str, rows: int = 1) -> str:
    """Feast's SQLite upsert (as its store builds it without the optional columns), of ``rows``
    rows at once. Rows of one statement are upserted in order, as separate statements would be."""
    quoted = '"' + table_name.replace('"', '""') + '"'
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO {quoted} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
        f"VALUES {values} ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
        "created_ts = excluded.created_ts;"
    )


def _groups(rows: Iterator[tuple], size: int, rest: list[tuple]) -> Iterator[tuple]:
    """The parameters of ``size`` rows at a time, flattened, lazily; the last rows, short of a
    group, are left in ``rest``."""
    while group := list(itertools.islice(rows, size)):
        if len(group) < size:
            rest.extend(group)
            return
        yield tuple(itertools.chain.from_iterable(group))


def _sqlite_rows(data: Sequence[Row], version: int) -> Iterator[tuple]:
    """One SQLite row per (entity, feature) of ``data``, as Feast's store builds it, lazily."""
    bound: dict[dt.datetime, Any] = {}
    for entity_key, values, timestamp, created in data:
        key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
        event_ts = _bound_timestamp(timestamp, bound)
        created_ts = None if created is None else _bound_timestamp(created, bound)
        for feature, value in values.items():
            text, _ = extract_text_and_num(value, False)
            yield key, feature, value.SerializeToString(), text, event_ts, created_ts


def _encoded_sqlite_rows(encoded: arrow_write.EncodedBatch, version: int) -> Iterator[tuple]:
    """The rows of :func:`_sqlite_rows` for the same batch, from its encoded columns, lazily."""
    bound: dict[dt.datetime, Any] = {}
    features = encoded.features
    rows = zip(encoded.entity_keys, encoded.event_timestamps, encoded.created_timestamps, strict=True)
    for i, (entity_key, timestamp, created) in enumerate(rows):
        key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
        event_ts = _bound_timestamp(timestamp, bound)
        created_ts = None if created is None else _bound_timestamp(created, bound)
        for feature, values, texts in features:
            yield key, feature, values[i], texts[i], event_ts, created_ts


def _bound_timestamp(timestamp: dt.datetime, bound: dict[dt.datetime, Any]) -> Any:
    """The value SQLite stores for a timestamp of Feast's store: naive UTC through the adapter that
    Feast registers with :mod:`sqlite3` (epoch seconds). A snapshot's rows share one timestamp, so
    it is adapted once per batch rather than once per value."""
    if timestamp not in bound:
        naive = to_naive_utc(timestamp)
        bound[timestamp] = sqlite3.adapt(naive, sqlite3.PrepareProtocol, naive)
    return bound[timestamp]


class BatchedRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis online store settings (``connection_string``...), selecting
    :class:`BatchedRedisOnlineStore`."""

    type: Literal["include.mlops.features.online_stores.BatchedRedisOnlineStore"] = (  # type: ignore[assignment]
        f"{_MODULE}.BatchedRedisOnlineStore"
    )


class BatchedRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store, with each view's field names and each timestamp encoded once.

    An entity's hash gets what Feast's store writes: ``_ts:<view>`` (the event time as a protobuf
    ``Timestamp``) and one field per feature (murmur3 of ``<view>:<feature>``), in one ``HSET``,
    plus ``EXPIRE`` when ``key_ttl_seconds`` is set. As in Feast's store, a row whose event time is
    not newer than the stored one (or than an earlier row of the batch for the same entity) is
    skipped unless ``skip_dedup``: a rerun of a day writes nothing and leaves the store as it was.
    One pipeline reads the stored times of the batch, one writes it: no round trip per entity.
    """

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Write ``data`` (Feast's rows of one batch) to the entities' hashes in one pipeline."""

        def values(i: int) -> Iterator[tuple[str, bytes]]:
            return ((feature, value.SerializeToString()) for feature, value in data[i][1].items())

        self._write(config, table, [row[0] for row in data], [row[2] for row in data], values)
        if progress:
            progress(len(data))

    def online_write_arrow(
        self, config: RepoConfig, table: FeatureView, batch: pa.RecordBatch, join_keys: dict[str, ValueType]
    ) -> None:
        """Write the hashes :meth:`online_write_batch` would write for Feast's conversion of
        ``batch`` (an Arrow batch of the view's source), without that conversion (:mod:`.arrow_write`)."""
        if not arrow_write.is_feature_view(table):
            self.online_write_batch(config, table, arrow_write.proto_rows(batch, table, join_keys), None)
            return
        encoded = arrow_write.encode_batch(batch, table, join_keys)
        features = encoded.features

        def values(i: int) -> Iterator[tuple[str, bytes]]:
            return ((feature, encoded_values[i]) for feature, encoded_values, _ in features)

        self._write(config, table, encoded.entity_keys, encoded.event_timestamps, values)

    def _write(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: Sequence[EntityKey],
        timestamps: Sequence[dt.datetime],
        values: Callable[[int], Iterable[tuple[str, bytes]]],
    ) -> None:
        """One pipeline of ``HSET`` (and ``EXPIRE``) for the rows to write: row ``i`` is the entity
        ``entity_keys[i]`` at ``timestamps[i]`` with the serialized feature values ``values(i)``."""
        store = config.online_store
        client = self._get_client(store)
        view = compute_versioned_name(table, config.registry.enable_online_feature_view_versioning)
        ts_field = f"_ts:{view}"
        version = config.entity_key_serialization_version
        keys = [
            _redis_key(config.project, key, entity_key_serialization_version=version) for key in entity_keys
        ]
        stamps = _encoded_timestamps(timestamps)
        with client.pipeline(transaction=False) as pipe:
            if store.skip_dedup:
                chosen: Sequence[int] = range(len(keys))
            else:
                for key in keys:
                    pipe.hmget(key, ts_field)
                chosen = _newer_rows(keys, stamps, [reply[0] for reply in pipe.execute()])
            fields = _FieldNames(view)
            for i in chosen:
                command: list[Any] = ["HSET", keys[i], ts_field, stamps[i][0]]
                for feature, value in values(i):
                    command += (fields[feature], value)
                pipe.execute_command(*command)
                if store.key_ttl_seconds:
                    pipe.expire(name=keys[i], time=store.key_ttl_seconds)
            pipe.execute()


class _FieldNames(dict):
    """A view's Redis field name per feature (Feast's murmur3 of ``<view>:<feature>``), computed once."""

    def __init__(self, view: str) -> None:
        super().__init__()
        self.view = view

    def __missing__(self, feature: str) -> bytes:
        self[feature] = _mmh3(f"{self.view}:{feature}")
        return self[feature]


def _encoded_timestamps(timestamps: Iterable[dt.datetime]) -> list[tuple[bytes, int]]:
    """Each row's event time as Feast's Redis store stores and compares it: the serialized
    protobuf ``Timestamp`` and its nanoseconds since the epoch. A snapshot's rows share one time,
    so each distinct time is encoded once."""
    seen: dict[dt.datetime, tuple[bytes, int]] = {}
    out = []
    for timestamp in timestamps:
        encoded = seen.get(timestamp)
        if encoded is None:
            stamp = Timestamp()
            stamp.FromDatetime(make_tzaware(timestamp))
            encoded = seen[timestamp] = (
                stamp.SerializeToString(),
                stamp.seconds * 1_000_000_000 + stamp.nanos,
            )
        out.append(encoded)
    return out


def _newer_rows(keys: list[bytes], stamps: list[tuple[bytes, int]], stored: list[bytes | None]) -> list[int]:
    """The rows Feast's Redis store writes: those newer than both the entity's stored event time
    and every earlier row of the batch for the same entity (an equal time is not newer)."""
    latest: dict[bytes, int] = {}
    chosen = []
    for i, (key, (_, nanos), previous) in enumerate(zip(keys, stamps, stored, strict=True)):
        seen = latest.get(key, 0)
        if previous:
            stamp = Timestamp()
            stamp.ParseFromString(previous)
            seen = max(seen, stamp.seconds * 1_000_000_000 + stamp.nanos)
        if seen and nanos <= seen:
            continue
        latest[key] = nanos
        chosen.append(i)
    return chosen
