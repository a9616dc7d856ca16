"""Loading a day into the online store: :func:`materialize_day`, over exactly that day's interval.

The registry must already hold the definitions of ``feature_repo/`` (deployed with
``python -m include.mlops features apply``): a materialization never registers them, it checks
them (:func:`.require_deployed`) and stops with the deploy command when they are missing or differ.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from include.mlops import lake
from include.mlops.core.settings import resolve_settings
from include.mlops.features.contract import (
    CUSTOMER_VIEW,
    MERCHANT_VIEW,
    SNAPSHOT_VIEWS,
    snapshot_location,
    snapshot_timestamp,
)
from include.mlops.features.store import feature_store, quiet_feast_calls, require_deployed

if TYPE_CHECKING:
    import feast

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)


def materialize_day(day: dt.date, settings: Settings | None = None) -> dict:
    """Load the snapshots of ``day`` into the online store: ``materialize`` over exactly that interval.

    The interval is ``[end of day, end of day + 1 day)``, which holds that day's snapshot and no
    other. Rerunning a day writes the same values again. A view whose online store already holds a
    later day (a backfill of an old day) is left alone: the later snapshots supersede it (an entity
    that left the window got a null row), so writing it would only roll the store back. Raises
    :class:`.FeaturesNotRegistered` when the registry does not hold the repository's definitions.
    """
    started = time.perf_counter()
    s = resolve_settings(settings)
    _require_snapshots(day, s)
    store = feature_store(s)
    require_deployed(store, s)
    start = snapshot_timestamp(day)
    end = start + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    to_load, skipped = _views_to_load(store, end)
    if to_load:
        with quiet_feast_calls():
            store.materialize(start_date=start, end_date=end, feature_views=to_load)
    for name, reason in skipped.items():
        logger.info("online store: %s of %s not loaded: %s", name, day, reason)
    rows = {view: _snapshot_rows(view, day, s) for view in SNAPSHOT_VIEWS}
    seconds = round(time.perf_counter() - started, 3)
    logger.info("online store: loaded %s of %s (%.1f s)", ", ".join(to_load) or "nothing", day, seconds)
    return {
        "day": day.isoformat(),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "materialized": to_load,
        "skipped": skipped,
        "rows": rows,
        "seconds": seconds,
    }


def _require_snapshots(day: dt.date, s: Settings) -> None:
    """Raise :class:`FileNotFoundError` unless both snapshots of ``day`` are in the lake."""
    for view in SNAPSHOT_VIEWS:
        loc = snapshot_location(view, day, s)
        if not lake.exists(loc):
            raise FileNotFoundError(
                f"no {view} snapshot for {day.isoformat()} at {loc.url}: run compute_features_for_day first"
            )


def _views_to_load(store: feast.FeatureStore, end: dt.datetime) -> tuple[list[str], dict[str, str]]:
    """The snapshot views to materialize up to ``end``, and those skipped with the reason.

    A view whose materialization history already reaches past ``end`` holds a later snapshot.
    """
    to_load, skipped = [], {}
    for name in (CUSTOMER_VIEW, MERCHANT_VIEW):
        view = store.registry.get_feature_view(name, store.project, allow_cache=False)
        latest = max((e for _, e in view.materialization_intervals), default=None)
        if latest is not None and latest > end:
            skipped[name] = f"online store already holds a later snapshot (up to {latest.isoformat()})"
        else:
            to_load.append(name)
    return to_load, skipped


def _snapshot_rows(view: str, day: dt.date, s: Settings) -> int:
    """The row count of a snapshot file (its parquet footer only)."""
    loc = snapshot_location(view, day, s)
    return pq.read_metadata(loc.path, filesystem=loc.fs).num_rows
