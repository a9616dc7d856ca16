"""The Feast store: configuration per profile, definitions and materialization.

:func:`feature_store` builds a store from the settings, :func:`apply_definitions` registers
``feature_repo/`` through the Python API, :func:`materialize_day` loads exactly one day's snapshot
interval into the online store; :mod:`.retrieval` reads the features back. Feast is imported
inside the functions. The registry is Feast's SQL registry in both profiles (SQLite embedded,
PostgreSQL cluster): every change is a transaction, so a killed task never leaves it truncated.
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


def _feast_env(s: Settings, registry: str | None = None) -> dict[str, str]:
    """The variables the ``feature_store*.yaml`` files refer to, from the settings.

    ``registry`` replaces the settings' registry (the staging file of :func:`_bootstrap_registry`).
    """
    return {
        "MLOPS_FEAST_REGISTRY": registry or s.feast_registry,
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
    so a store can be built for settings other than the process's own (tests, tools). In the
    embedded profile the registry is a SQLite database that exists only complete: a missing one is
    first built aside with every definition and moved into place (:func:`_bootstrap_registry`).
    """
    s = resolve_settings(settings)
    if not s.is_cluster:
        _check_registry_file(s.feast_registry)
        Path(s.feast_online_path).parent.mkdir(parents=True, exist_ok=True)
        if not _registry_in_place(Path(s.feast_registry)):
            _bootstrap_registry(s)
    return _build_store(s)


def _build_store(s: Settings, registry: str | None = None) -> feast.FeatureStore:
    """The Feast store of the settings, over ``registry`` instead of the settings' one if given."""
    import yaml

    # Feast logs each refresh of its registry cache at INFO, many times per materialization and
    # retrieval: only what is wrong reaches a task's log.
    logging.getLogger("feast").setLevel(logging.WARNING)
    quiet_feast_import()
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    repo = Path(s.feast_repo).resolve()
    source = feature_store_yaml(s)
    # The process environment stays the base, as the Feast CLI expands the same yaml from it; the
    # settings' values override it so that a store can be built for other settings.
    env = {**os.environ, **_feast_env(s, registry)}
    config = RepoConfig(**yaml.safe_load(expand_variables(source.read_text(), env, source)))
    config.repo_path = repo
    return FeatureStore(repo_path=str(repo), config=config)


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_registry_file(setting: str) -> None:
    """Raise :class:`ValueError` unless the embedded registry setting names a usable SQLite file."""
    if "://" in setting:
        raise ValueError(
            f"MLOPS_FEAST_REGISTRY={setting}: the embedded profile keeps the Feast registry in a SQLite "
            "file and takes its path, not a URL"
        )
    path = Path(setting)
    if _registry_in_place(path):
        with path.open("rb") as handle:
            if handle.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                raise ValueError(
                    f"the Feast registry {path} is not a SQLite database (a file registry of an earlier "
                    "layout?): move it away, the next run registers the definitions again"
                )


def _registry_in_place(path: Path) -> bool:
    """Whether the embedded registry exists; an empty file is none (a SQLite file never is)."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _bootstrap_registry(s: Settings) -> None:
    """Create the embedded registry with every definition applied, or leave it absent.

    The definitions are applied to a staging database next to it, which is synced and renamed into
    place: a kill at any moment leaves either no registry (the next use starts over) or a complete
    one, never an empty or half-registered one. Later writes are SQLite transactions. A file lock
    keeps concurrent first uses from building it twice.
    """
    import fcntl

    path = Path(s.feast_registry)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _registry_in_place(path):
            return
        for stale in path.parent.glob(f".{path.name}.*.staging"):
            # Left by a process killed while building: nobody else builds while the lock is held.
            stale.unlink()
        staging = path.with_name(f".{path.name}.{os.getpid()}.staging")
        try:
            store = _build_store(s, str(staging))
            _apply(store, s)
            for engine in {store.registry.write_engine, store.registry.read_engine}:
                engine.dispose()
            _fsync(staging)
            os.replace(staging, path)
            _fsync(path.parent)
        finally:
            staging.unlink(missing_ok=True)
    logger.info("Feast registry created at %s", path)


def _fsync(path: Path) -> None:
    """Flush a file or a folder (a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        if isinstance(source, FeatureView):
            # The SQL registry copies the stored history into a view applied without one, and
            # stores the history of a view applied with one as it is: a definition must carry none,
            # or a second apply in one process would write back the history of the first.
            source.materialization_intervals = []
    return objects


def apply_definitions(settings: Settings | None = None) -> dict:
    """Register the definitions of ``feature_repo/`` through the Python API (idempotent).

    Also creates the online store's tables. Objects registered earlier under names that the
    repository no longer defines are removed, as ``feast apply`` would. Returns what was applied.
    """
    s = resolve_settings(settings)
    applied = _apply(feature_store(s), s)
    logger.info(
        "Feast project %s: registered feature services %s (removed: %s)",
        applied["project"],
        ", ".join(applied["feature_services"]),
        ", ".join(applied["deleted"]) or "none",
    )
    return applied


def _apply(store: feast.FeatureStore, s: Settings) -> dict:
    """Apply the repository's definitions to ``store``, removing the ones it no longer defines."""
    started = time.perf_counter()
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
    return {
        "project": store.project,
        "feature_views": sorted(o.name for o in objects if type(o).__name__ == "FeatureView"),
        "on_demand_feature_views": sorted(
            o.name for o in objects if type(o).__name__ == "OnDemandFeatureView"
        ),
        "feature_services": sorted(o.name for o in objects if type(o).__name__ == "FeatureService"),
        "deleted": sorted(o.name for o in stale),
        "seconds": round(time.perf_counter() - started, 3),
    }


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
