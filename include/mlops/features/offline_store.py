"""Feast's DuckDB offline store, reading only the snapshot days a query can reach; chosen by
``offline_store: type:``.

A snapshot source is a glob over every day's file, and Feast's point-in-time join states its time
bounds only as join conditions (a snapshot at or before the payment, within the view's TTL):
DuckDB opens and scans every day's snapshots for every query. A chunk of scoring or training then
costs more with each day the lake keeps (about 0.07 s per day of history for 250k payments here),
and a materialization of one day scans them all as well.

This store is Feast's with two changes. First, each query reads its sources through a filter on
the rows it can use, which DuckDB applies before reading.

* A point-in-time retrieval can only use rows with ``first - ttl <= event_timestamp <= last``
  (``first`` and ``last``: the entity rows' earliest and latest timestamps; no lower bound for a
  view without a TTL). A materialization or a pull uses those between its start and end.
* The filter on ``event_timestamp`` is that bound. On a snapshot source it is joined by a filter
  on the day of the partition folder (``dt``, which DuckDB reads from the path): DuckDB then skips
  the other days' files without opening them. A day ``D``'s snapshot carries ``D+1 00:00 UTC``
  (:func:`~include.mlops.features.contract.snapshot_timestamp`): the folders kept are those of
  ``date(first) - 1`` to ``date(last)``, a day wider than the timestamps need.

The join conditions still apply unchanged, so every query returns the rows it returns without the
filter (tests compare both stores on the same lake).

A second change: the point-in-time join is DuckDB's ``ASOF JOIN`` (:mod:`.asof`), which finds each
payment's latest snapshot without Feast's window sort of every earlier one, wherever it returns
Feast's rows (:func:`~include.mlops.features.asof.asof_applies`); Feast's join elsewhere.

Two more things keep a task's memory bounded whatever the day's size:

* ``memory_limit`` (in the yaml): DuckDB's join of a chunk otherwise grows with the population of
  the snapshots it reads (1.2 GB for 250k payments against 1.25M customers); past the limit it
  spills to the system's temporary folder (:func:`configure_duckdb`).
* :class:`ReleasingRetrievalJob`: the entity rows a retrieval hands to DuckDB are let go once it
  has run, not when the process exits.

Feast imports this module by the class path in ``feature_repo/feature_store*.yaml``; the pipeline
never imports it.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.ibis import (
    IbisRetrievalJob,
    _get_entity_df_event_timestamp_range,
    _to_utc,
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)

from include.mlops.features import asof

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    import pyarrow as pa
    from feast import FeatureView
    from feast.data_source import DataSource
    from feast.infra.offline_stores.offline_store import RetrievalJob
    from feast.infra.registry.base_registry import BaseRegistry
    from feast.repo_config import RepoConfig
    from ibis.expr.types import Table

_MODULE = "include.mlops.features.offline_store"

PARTITION_COLUMN = "dt"
"""The column DuckDB reads from a ``dt=YYYY-MM-DD`` folder of the path (hive partitioning)."""


class WindowedDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Feast's DuckDB offline store settings, selecting :class:`WindowedDuckDBOfflineStore`."""

    type: Literal["include.mlops.features.offline_store.WindowedDuckDBOfflineStore"] = (  # type: ignore[assignment]
        f"{_MODULE}.WindowedDuckDBOfflineStore"
    )
    memory_limit: str | None = None
    """DuckDB's ``memory_limit`` for the queries (``"512MB"``...): past it, DuckDB spills its joins
    and windows to the system's temporary folder. ``None``: DuckDB's default (80 % of the RAM)."""


def configure_duckdb(config: WindowedDuckDBOfflineStoreConfig) -> None:
    """Apply the store's settings to the DuckDB connection Feast's queries run on (ibis's default
    backend, one per process): its memory limit, and spills under the system's temporary folder
    (an in-memory DuckDB spills under the working directory otherwise)."""
    import tempfile
    from pathlib import Path

    import ibis

    con = ibis.get_backend()
    spill = str(Path(tempfile.gettempdir()) / "mlops-duckdb")
    # DuckDB refuses to switch the folder once it has spilled there, even to the same one.
    if con.raw_sql("SELECT current_setting('temp_directory')").fetchone()[0] != spill:
        con.raw_sql("SET temp_directory = " + _quoted(spill))
    if config.memory_limit is not None:
        con.raw_sql("SET memory_limit = " + _quoted(config.memory_limit))


def _quoted(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime (a naive one is taken as UTC, as Feast does)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def window_reader(first: dt.datetime | None, last: dt.datetime | None) -> Callable[[DataSource, str], Table]:
    """Feast's DuckDB source reader, keeping the rows with ``first <= event_timestamp <= last``
    (either bound may be ``None``: unbounded) and, on a snapshot source, only the partition folders
    of the days that can hold them."""
    first = None if first is None else _utc(first)
    last = None if last is None else _utc(last)

    def read(source: DataSource, repo_path: str) -> Table:
        table = feast_duckdb._read_data_source(source, repo_path)
        stamp = table[source.timestamp_field]
        keep = []
        if first is not None:
            keep.append(stamp >= first)
        if last is not None:
            keep.append(stamp <= last)
        if source.tags.get("snapshot") and PARTITION_COLUMN in table.columns:
            day = table[PARTITION_COLUMN]
            if first is not None:
                keep.append(day >= first.date() - dt.timedelta(days=1))
            if last is not None:
                keep.append(day <= last.date())
        return table.filter(*keep) if keep else table

    return read


def entity_window(
    entity_df: pd.DataFrame, feature_views: list[FeatureView]
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The event timestamps a point-in-time join of ``entity_df`` can use: from its earliest
    timestamp less the longest TTL (``None`` when a view has none) to its latest. ``(None, None)``
    for an entity frame without rows."""
    import pandas as pd
    from feast.infra.offline_stores import offline_utils

    schema = dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
    column = offline_utils.infer_event_timestamp_from_entity_df(schema)
    stamps = pd.to_datetime(entity_df[column], utc=True)
    if stamps.empty or stamps.isna().all():
        return None, None
    last = stamps.max().to_pydatetime()
    ttls = [view.ttl for view in feature_views]
    if not ttls or any(not ttl for ttl in ttls):
        return None, last
    return stamps.min().to_pydatetime() - max(ttls), last


class WindowedDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store, each query reading only the rows its time bounds allow."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        configure_duckdb(config.offline_store)
        if isinstance(entity_df, str):  # a query: its timestamps are not known here
            first, last = None, None
        else:
            first, last = entity_window(entity_df, feature_views)
        feast_duckdb._validate_lance_feature_views(feature_views)
        reader = window_reader(first, last)
        if not isinstance(entity_df, str):
            tables = asof.feature_tables(config, feature_views, feature_refs, full_feature_names, reader)
            if asof.asof_applies(tables, list(entity_df.columns), filter_by_created_timestamp):
                return _asof_job(
                    config, tables, feature_refs, entity_df, registry, project, full_feature_names
                )
        job = get_historical_features_ibis(
            config=config,
            feature_views=feature_views,
            feature_refs=feature_refs,
            entity_df=entity_df,
            registry=registry,
            project=project,
            full_feature_names=full_feature_names,
            data_source_reader=reader,
            data_source_writer=feast_duckdb._write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
            filter_by_created_timestamp=filter_by_created_timestamp,
        )
        return ReleasingRetrievalJob(
            job.table,
            job._on_demand_feature_views,
            job._full_feature_names,
            job._metadata,
            job.data_source_writer,
            job.staging_location,
            job.staging_location_endpoint_override,
            job.repo_path,
        )

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: dt.datetime,
        end_date: dt.datetime,
    ) -> RetrievalJob:
        configure_duckdb(config.offline_store)
        return pull_latest_from_table_or_query_ibis(
            data_source_reader=window_reader(start_date, end_date),
            **_pull_arguments(config, data_source, join_key_columns, feature_name_columns, timestamp_field),
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: dt.datetime | None = None,
        end_date: dt.datetime | None = None,
    ) -> RetrievalJob:
        configure_duckdb(config.offline_store)
        return pull_all_from_table_or_query_ibis(
            data_source_reader=window_reader(start_date, end_date),
            **_pull_arguments(config, data_source, join_key_columns, feature_name_columns, timestamp_field),
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
        )


def _asof_job(
    config: RepoConfig,
    tables: list[asof.FeatureTable],
    feature_refs: list[str],
    entity_df: pd.DataFrame,
    registry: BaseRegistry,
    project: str,
    full_feature_names: bool,
) -> RetrievalJob:
    """The retrieval job Feast's ``get_historical_features_ibis`` builds, its join by
    :func:`~include.mlops.features.asof.asof_join`."""
    from feast.infra.offline_stores import offline_utils
    from feast.infra.offline_stores.offline_store import RetrievalMetadata
    from feast.on_demand_feature_view import OnDemandFeatureView

    schema = dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
    stamp = offline_utils.infer_event_timestamp_from_entity_df(entity_schema=schema)
    first, last = _get_entity_df_event_timestamp_range(entity_df, stamp)
    entity_df = _to_utc(entity_df, stamp)
    result = asof.asof_join(entity_df, tables, stamp)
    odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
    for odfv in [fv for fv in odfvs if fv.mode == "substrait"]:
        result = odfv.transform_ibis(result, full_feature_names)
    metadata = RetrievalMetadata(
        features=feature_refs,
        keys=list(set(entity_df.columns) - {stamp}),
        min_event_timestamp=first,
        max_event_timestamp=last,
    )
    return ReleasingRetrievalJob(
        result,
        [fv for fv in odfvs if fv.mode != "substrait"],
        full_feature_names,
        metadata,
        feast_duckdb._write_data_source,
        config.offline_store.staging_location,
        config.offline_store.staging_location_endpoint_override,
        str(config.repo_path),
    )


def _pull_arguments(
    config: RepoConfig, data_source: DataSource, keys: list[str], features: list[str], timestamp_field: str
) -> dict[str, Any]:
    """The arguments Feast's DuckDB store passes to both of its pulls, but the reader and the times."""
    return {
        "config": config,
        "data_source": data_source,
        "join_key_columns": keys,
        "feature_name_columns": features,
        "timestamp_field": timestamp_field,
        "data_source_writer": feast_duckdb._write_data_source,
        "staging_location": config.offline_store.staging_location,
        "staging_location_endpoint_override": config.offline_store.staging_location_endpoint_override,
    }


class ReleasingRetrievalJob(IbisRetrievalJob):
    """Feast's DuckDB retrieval job, letting go of its entity rows each time it has run.

    ibis registers the entity frame with DuckDB, as a view over its Arrow data, when the query
    first runs, and drops it only when the process exits: a task retrieving chunk after chunk kept
    every chunk's entity rows (about 25 MB per 250k payments, a gigabyte over a 10M-payment day).
    This job unregisters them after each run; a later run registers them again.
    """

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        try:
            return super()._to_df_internal(timeout)
        finally:
            release_entity_rows(self.table)

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        try:
            return super()._to_arrow_internal(timeout)
        finally:
            release_entity_rows(self.table)


def release_entity_rows(table: Table) -> None:
    """Unregister from its DuckDB connection every in-memory table ``table`` reads (ibis's
    bookkeeping too, so that running ``table`` again registers them again)."""
    import ibis.expr.operations as ops

    backend = table._find_backend(use_default=True)
    for memtable in table.op().find(ops.InMemoryTable):
        if memtable in backend._memtables:
            backend._memtables.discard(memtable)
            backend.con.unregister(memtable.name)
