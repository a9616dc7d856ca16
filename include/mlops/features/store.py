"""The Feast store: configuration per profile, definitions and materialization.

:func:`feature_store` builds a store from the settings, :func:`apply_definitions` registers
``feature_repo/`` through the Python API, :func:`materialize_day` loads exactly one day's snapshot
interval into the online store; :mod:`.retrieval` reads the features back. Feast is imported
inside the functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import pyarrow.parquet as pq

from include.mlops import lake
from include.mlops.core.settings import resolve_settings
from include.mlops.features.contract import (
    CUSTOMER_VIEW,
    MERCHANT_VIEW,
    SNAPSHOT_VIEWS,
    snapshot_glob,
    snapshot_location,
    snapshot_timestamp,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import feast

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)


def feast_redis_connection(url: str) -> str:
    """Feast's Redis connection string (``host:port,db=N,...``) from a ``redis://`` URL or itself.

    A value that is not a ``redis://`` or ``rediss://`` URL is taken to be in Feast's form already.
    """
    if not url.startswith(("redis://", "rediss://")):
        return url
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    db = parsed.path.strip("/")
    if db:
        parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.username and parsed.username != "default":
        parts.append(f"username={parsed.username}")
    if parsed.scheme == "rediss" or parse_qs(parsed.query).get("ssl") == ["true"]:
        parts.append("ssl=true")
    return ",".join(parts)


def _feast_env(s: Settings) -> dict[str, str]:
    """The variables the ``feature_store*.yaml`` files refer to, from the settings."""
    return {
        "MLOPS_FEAST_REGISTRY": s.feast_registry,
        "MLOPS_FEAST_ONLINE_PATH": s.feast_online_path,
        "MLOPS_REDIS_URL": feast_redis_connection(s.redis_url),
    }


def feature_store_yaml(settings: Settings | None = None) -> Path:
    """The configuration for the profile: ``feature_store.yaml`` or ``feature_store.cluster.yaml``."""
    s = resolve_settings(settings)
    name = "feature_store.cluster.yaml" if s.is_cluster else "feature_store.yaml"
    return Path(s.feast_repo) / name


def expand_variables(text: str, env: Mapping[str, str], source: Path) -> str:
    """``text`` with each ``${NAME}`` replaced by ``env[NAME]``; a name not in ``env`` is an error.

    ``source`` is the file the text comes from, for the error message.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ValueError(f"{source} refers to ${{{name}}}, which is not set")
        return env[name]

    return re.sub(r"\$\{(\w+)\}", value, text)


def _typechecked_off(target: Any = None, **_options: Any) -> Any:
    """typeguard's ``@typechecked`` as ``python -O`` makes it: the function or class unchanged."""
    return _typechecked_off if target is None else target


def quiet_feast_import() -> None:
    """Switch off typeguard's import-time instrumentation before Feast is imported.

    Feast decorates about 260 functions with typeguard's ``@typechecked``, which re-parses and
    recompiles the decorated function's whole module, once per function, while Feast is imported:
    4.5 s of the 7 s ``import feast`` took on a 2-core machine (2.6 s without), paid by every task
    that touches the feature store. typeguard documents the decorator as a development aid that
    ``python -O`` turns into a no-op; this makes it the same no-op for the process (the checks it
    skips only raise on type errors in calls into Feast). Without effect once Feast is imported.
    """
    if "feast" in sys.modules:
        return
    import typeguard

    typeguard.typechecked = _typechecked_off


def feature_store(settings: Settings | None = None) -> feast.FeatureStore:
    """A Feast store over ``feature_repo/`` with the profile's configuration and the settings' paths.

    The yaml's ``${VAR}`` references are filled from the settings (over the process environment),
    so a store can be built for settings other than the process's own (tests, tools).
    """
    import yaml

    # Feast logs each refresh of its registry cache at INFO, many times per materialization and
    # retrieval: only what is wrong reaches a task's log.
    logging.getLogger("feast").setLevel(logging.WARNING)
    quiet_feast_import()
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    s = resolve_settings(settings)
    repo = Path(s.feast_repo).resolve()
    source = feature_store_yaml(s)
    # The process environment stays the base, as the Feast CLI expands the same yaml from it; the
    # settings' values override it so that a store can be built for other settings.
    env = {**os.environ, **_feast_env(s)}
    config = RepoConfig(**yaml.safe_load(expand_variables(source.read_text(), env, source)))
    config.repo_path = repo
    if not s.is_cluster:
        # The file registry and the SQLite database are created on first use, but not their folder.
        for path in (s.feast_registry, s.feast_online_path):
            if "://" not in path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(repo), config=config)


def _repo_objects(s: Settings) -> list[Any]:
    """The definitions of ``feature_repo/``, with the snapshot sources pointing at the settings' lake.

    Feast's own ``parse_repo`` names modules relative to the working directory (the CLI changes
    into the repository first); changing a whole process's directory is not an option inside a
    task, so the modules are imported here by their top-level names, as the CLI sees them.
    """
    import importlib

    quiet_feast_import()
    from feast import Entity, FeatureService, FeatureView, FileSource, OnDemandFeatureView
    from feast.data_source import DataSource
    from feast.repo_operations import get_repo_files

    repo = Path(s.feast_repo).resolve()
    if str(repo) not in sys.path:
        # Appended, so that these few top-level names never shadow an installed package.
        sys.path.append(str(repo))
    kinds = (DataSource, Entity, FeatureView, OnDemandFeatureView, FeatureService)
    objects: list[Any] = []
    for path in get_repo_files(repo):
        module = importlib.import_module(".".join(path.relative_to(repo).with_suffix("").parts))
        for value in vars(module).values():
            if isinstance(value, kinds) and not any(value is seen for seen in objects):
                objects.append(value)
    for source in objects:
        if isinstance(source, FileSource) and source.tags.get("snapshot"):
            source.file_options.uri = snapshot_glob(s.lake_url, source.tags["snapshot"])
            if s.lake_url.startswith("s3://") and s.s3_endpoint_url:
                source.file_options.s3_endpoint_override = s.s3_endpoint_url
    return objects


def apply_definitions(settings: Settings | None = None) -> dict:
    """Register the definitions of ``feature_repo/`` through the Python API (idempotent).

    Also creates the online store's tables. Objects registered earlier under names that the
    repository no longer defines are removed, as ``feast apply`` would. Returns what was applied.
    """
    started = time.perf_counter()
    s = resolve_settings(settings)
    store = feature_store(s)
    objects = _repo_objects(s)
    names = {(type(o).__name__, o.name) for o in objects}
    stale: list[Any] = [
        o
        for o in (
            *store.list_feature_services(),
            *store.list_on_demand_feature_views(),
            *store.list_feature_views(),
        )
        if (type(o).__name__, o.name) not in names
    ]
    store.apply(objects, objects_to_delete=stale, partial=not stale)
    applied = {
        "project": store.project,
        "feature_views": sorted(o.name for o in objects if type(o).__name__ == "FeatureView"),
        "on_demand_feature_views": sorted(
            o.name for o in objects if type(o).__name__ == "OnDemandFeatureView"
        ),
        "feature_services": sorted(o.name for o in objects if type(o).__name__ == "FeatureService"),
        "deleted": sorted(o.name for o in stale),
        "seconds": round(time.perf_counter() - started, 3),
    }
    logger.info(
        "Feast project %s: registered feature services %s (removed: %s)",
        applied["project"],
        ", ".join(applied["feature_services"]),
        ", ".join(applied["deleted"]) or "none",
    )
    return applied


def materialize_day(day: dt.date, settings: Settings | None = None) -> dict:
    """Load the snapshots of ``day`` into the online store: ``materialize`` over exactly that interval.

    The definitions are registered first (:func:`apply_definitions`). The interval is
    ``[end of day, end of day + 1 day)``, which holds that day's snapshot and no other. Rerunning a
    day writes the same values again. A view whose online store already holds a later day (a
    backfill of an old day) is left alone: the later snapshots supersede it (an entity that left the
    window got a null row), so writing it would only roll the store back.
    """
    started = time.perf_counter()
    s = resolve_settings(settings)
    _require_snapshots(day, s)
    # Registering first keeps the registry in step with the code that runs (and bootstraps a fresh
    # home); it is idempotent and keeps the views' materialization history.
    apply_definitions(s)
    store = feature_store(s)
    start = snapshot_timestamp(day)
    end = start + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    to_load, skipped = _views_to_load(store, end)
    if to_load:
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
