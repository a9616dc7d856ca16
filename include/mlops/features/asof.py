"""Feast's point-in-time join by DuckDB's ``ASOF JOIN``: the same rows, without Feast's window sort.

Feast's join (``point_in_time_join`` in ``feast.infra.offline_stores.ibis``) pairs each entity row
with every snapshot of its keys at or before its timestamp and within the view's TTL, then numbers
those pairs per entity row by a window function and keeps the latest. For a chunk of 250k payments
against four days of 1.25M customers, that is a join of about a million pairs and their sort, per
view. An ``ASOF LEFT JOIN`` on the same keys finds that latest snapshot at or before the timestamp
directly (DuckDB sorts each side once and merges them). The TTL is then checked on the snapshot
found: when the latest snapshot at or before an entity row is older than the TTL, so is every
earlier one, and Feast finds none either.

The two are the same join only where Feast's has no other way to choose between snapshots.
:func:`asof_applies` says when: no view with a created-timestamp column (Feast breaks ties between
snapshots of one instant by it), ``filter_by_created_timestamp`` off, and no feature named like an
entity column or another view's feature (Feast's join renames or drops those), nor like the
join's own columns. Elsewhere, the store runs Feast's join. Between two snapshots of the same keys
and instant, both joins keep either one. Tests compare the two stores' rows on the same lake, edges
of the TTL included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable

    import pandas as pd
    from feast import FeatureView
    from feast.data_source import DataSource
    from feast.repo_config import RepoConfig
    from ibis.expr.types import Table

_PRIVATE = "__asof_"
"""The prefix of the columns the join adds for itself (keys, timestamps, positions)."""

_POSITION = f"{_PRIVATE}position"
"""The column that carries each entity row's position through the joins."""

FeatureTable = tuple[Any, str, "str | None", dict[str, str], list[str], "dt.timedelta | None"]
"""What Feast's join takes per view: its table, timestamp field, created-timestamp column, join keys
(view column to entity column), feature columns and TTL."""


def feature_tables(
    config: RepoConfig,
    feature_views: list[FeatureView],
    feature_refs: list[str],
    full_feature_names: bool,
    reader: Callable[[DataSource, str], Table],
) -> list[FeatureTable]:
    """Each view's source as Feast's ibis retrieval reads it (``read_fv`` in
    ``get_historical_features_ibis``): fields mapped back, timestamps in UTC, the requested features
    named as they come out."""
    import ibis.expr.datatypes as dt_types

    tables = []
    for view in feature_views:
        if view.batch_source is None:
            raise ValueError(f"Feature view '{view.name}' has no batch_source and cannot be queried.")
        source = view.batch_source
        table = reader(source, str(config.repo_path))
        for old_name, new_name in source.field_mapping.items():
            if old_name in table.columns:
                table = table.rename({new_name: old_name})
        stamps = [c for c in (source.timestamp_field, source.created_timestamp_column) if c]
        table = table.mutate(**{c: table[c].cast(dt_types.Timestamp(timezone="UTC")) for c in stamps})
        prefix = view.projection.name_to_use()
        refs = [ref.split(":")[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
        if full_feature_names:
            named = view.projection.name_alias or view.name
            table = table.rename({f"{named}__{ref}": ref for ref in refs})
            refs = [f"{named}__{ref}" for ref in refs]
        keys = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
        tables.append((table, source.timestamp_field, source.created_timestamp_column, keys, refs, view.ttl))
    return tables


def asof_applies(
    tables: list[FeatureTable], entity_columns: list[str], filter_by_created_timestamp: bool
) -> bool:
    """Whether :func:`asof_join` returns Feast's rows for these views (see the module's text)."""
    if filter_by_created_timestamp or any(created for _, _, created, _, _, _ in tables):
        return False
    features = [ref for *_, refs, _ in tables for ref in refs]
    if any(name.startswith(_PRIVATE) for name in (*entity_columns, *features)):
        return False  # a name of the join's own columns
    return len(set(features)) == len(features) and not set(features) & set(entity_columns)


def asof_join(entity_df: pd.DataFrame, tables: list[FeatureTable], event_timestamp_col: str) -> Table:
    """The rows of ``entity_df`` with each view's features of its latest snapshot at or before
    ``event_timestamp_col`` and within the view's TTL (null without one): Feast's
    ``point_in_time_join`` where :func:`asof_applies`. The entity columns come first, then the
    features, view after view; the rows in the order of ``entity_df`` (Feast's join promises none,
    and DuckDB's parallel ``ASOF JOIN`` would give another at each run)."""
    import ibis
    import numpy as np

    entity_columns = list(entity_df.columns)
    acc = ibis.memtable(entity_df.assign(**{_POSITION: np.arange(len(entity_df), dtype=np.int64)}))
    added: list[str] = []
    for i, (table, stamp, _, join_keys, refs, ttl) in enumerate(tables):
        at = f"{_PRIVATE}ts_{i}"
        keys = {f"{_PRIVATE}key_{i}_{j}": pair for j, pair in enumerate(join_keys.items())}
        right = table.select(
            **{name: table[column] for name, (column, _) in keys.items()},
            **{at: table[stamp]},
            **{ref: table[ref] for ref in refs},
        )
        joined = acc.asof_join(
            right,
            on=acc[event_timestamp_col] >= right[at],
            predicates=[acc[entity] == right[name] for name, (_, entity) in keys.items()],
        )
        if ttl:
            # Feast's expiry test, as Feast writes it: the snapshot's time plus the TTL.
            fresh = (joined[at] + ibis.literal(ttl)) >= joined[event_timestamp_col]
            joined = joined.mutate(
                **{ref: ibis.ifelse(fresh, joined[ref], ibis.null(joined[ref].type())) for ref in refs}
            )
        added += refs
        acc = joined.select(*entity_columns, _POSITION, *added)
    return acc.order_by(_POSITION).drop(_POSITION)
