"""The Feast store: configuration per profile, and the deploy step of the definitions.

:func:`feature_store` builds a store from the settings. The definitions of ``feature_repo/`` are
deployed, not re-applied by every run: :func:`apply_definitions` registers them (``python -m
include.mlops features apply``, ``make feast-apply``, and the local Airflow at start-up),
:func:`plan_definitions` says what an apply would change (``features plan``, run in CI), and
:func:`require_deployed` is how the pipeline refuses a registry that lacks them or holds others
(:mod:`.materialize`). Feast is imported inside the functions. The registry is Feast's SQL
registry in both profiles (SQLite embedded, PostgreSQL cluster): every change is a transaction,
so a killed task never leaves it truncated.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.core.settings import resolve_settings
from include.mlops.features.config import expand_variables, feast_redis_connection, feature_store_yaml
from include.mlops.features.contract import snapshot_glob

if TYPE_CHECKING:
    from collections.abc import Iterator

    import feast

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)

DEPLOY_COMMAND = "python -m include.mlops features apply"
"""The deploy step of the definitions (``make feast-apply`` locally)."""


class FeaturesNotRegistered(RuntimeError):
    """The Feast registry lacks the definitions of ``feature_repo/``, or holds other ones.

    Nothing in the pipeline registers them as a side effect: they are deployed with
    :data:`DEPLOY_COMMAND`, and the message says so.
    """


def _not_deployed(s: Settings, what: str) -> FeaturesNotRegistered:
    """The error for a registry that does not hold the repository's definitions, naming the fix."""
    return FeaturesNotRegistered(
        f"{what}. Deploy the definitions of {s.feast_repo} with `{DEPLOY_COMMAND}` (`make feast-apply` "
        "locally; the local Airflow also deploys them when it starts), then rerun."
    )


def _registry_name(s: Settings) -> str:
    """Where the registry is, for a message: its path, or its URL without the password."""
    return re.sub(r"(://[^:/@]+:)[^@/]+@", r"\1***@", s.feast_registry)


def _feast_env(s: Settings, registry: str | None = None) -> dict[str, str]:
    """The variables the ``feature_store*.yaml`` files refer to, from the settings.

    ``registry`` replaces the settings' registry (the staging file of :func:`_bootstrap_registry`).
    """
    return {
        "MLOPS_FEAST_REGISTRY": registry or s.feast_registry,
        "MLOPS_FEAST_ONLINE_PATH": s.feast_online_path,
        "MLOPS_REDIS_URL": feast_redis_connection(s.redis_url),
    }


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
    embedded profile a missing registry is an error (:class:`FeaturesNotRegistered`): it is created,
    complete, only by :func:`apply_definitions`, never as an empty database by a reader.
    """
    s = resolve_settings(settings)
    if not s.is_cluster:
        _check_registry_file(s.feast_registry)
        if not _registry_in_place(Path(s.feast_registry)):
            raise _not_deployed(s, f"There is no Feast registry at {s.feast_registry}")
        Path(s.feast_online_path).parent.mkdir(parents=True, exist_ok=True)
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


def _bootstrap_registry(s: Settings) -> dict | None:
    """Create the embedded registry with every definition applied, or leave it absent.

    The definitions are applied to a staging database next to it, which is synced and renamed into
    place: a kill at any moment leaves either no registry (the next use starts over) or a complete
    one, never an empty or half-registered one. Later writes are SQLite transactions. A file lock
    keeps concurrent first deploys from building it twice. Returns what was applied, or ``None``
    when another process created the registry meanwhile.
    """
    import fcntl

    path = Path(s.feast_registry)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _registry_in_place(path):
            return None
        for stale in path.parent.glob(f".{path.name}.*.staging"):
            # Left by a process killed while building: nobody else builds while the lock is held.
            stale.unlink()
        staging = path.with_name(f".{path.name}.{os.getpid()}.staging")
        try:
            store = _build_store(s, str(staging))
            applied = _apply(store, s)
            for engine in {store.registry.write_engine, store.registry.read_engine}:
                engine.dispose()
            _fsync(staging)
            os.replace(staging, path)
            _fsync(path.parent)
        finally:
            staging.unlink(missing_ok=True)
    logger.info("Feast registry created at %s", path)
    return applied


def _fsync(path: Path) -> None:
    """Flush a file or a folder (a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fresh_modules(repo: Path) -> None:
    """Forget the repository's modules imported earlier in this process.

    Feast completes the objects it is given (inferred features, the dummy entity) in place: a
    second apply or plan of the same objects in one process finds them changed and fails, so every
    apply and plan imports the definitions anew (a few small modules; Feast stays imported).
    """
    prefix = f"{repo}{os.sep}"  # the modules are imported from ``repo`` itself (see _repo_objects)
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]


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
    _fresh_modules(repo)
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


@contextlib.contextmanager
def quiet_feast_calls() -> Iterator[None]:
    """Around a call into Feast: only what is wrong reaches a task's log.

    Feast prints its progress to stdout (in terminal colours) and warns, on every apply and plan,
    that on-demand views are experimental; ibis, under the DuckDB offline store, warns of a
    deprecated DuckDB call on every read. In an Airflow task each printed line becomes a log line
    and each warning a WARNING: they are left out around the project's calls only (the process's
    warning filters and stdout are restored after).
    """
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", "On demand feature view is an experimental", RuntimeWarning)
        warnings.filterwarnings("ignore", r"fetch_arrow_table\(\) is deprecated", DeprecationWarning)
        yield


def apply_definitions(settings: Settings | None = None) -> dict:
    """Deploy the definitions of ``feature_repo/`` to the registry (idempotent): the deploy step.

    Also creates the online store's tables. Objects registered earlier under names that the
    repository no longer defines are removed, as ``feast apply`` would; the views' materialization
    history is kept. In the embedded profile a missing registry is created complete or not at all
    (:func:`_bootstrap_registry`). Returns what was applied. Run it when the definitions change
    (:data:`DEPLOY_COMMAND`), not from pipeline runs: an apply while another process materializes
    is how Feast users have lost materialization state.
    """
    s = resolve_settings(settings)
    applied = None
    if not s.is_cluster:
        _check_registry_file(s.feast_registry)
        Path(s.feast_online_path).parent.mkdir(parents=True, exist_ok=True)
        if not _registry_in_place(Path(s.feast_registry)):
            applied = _bootstrap_registry(s)
    if applied is None:
        applied = _apply(_build_store(s), s)
    logger.info(
        "Feast project %s: deployed feature services %s to %s (removed: %s)",
        applied["project"],
        ", ".join(applied["feature_services"]),
        _registry_name(s),
        ", ".join(applied["deleted"]) or "none",
    )
    return applied


def _kind(obj: Any) -> str:
    """What a registry object is, for matching by name: data sources share one namespace."""
    from feast.data_source import DataSource

    return "DataSource" if isinstance(obj, DataSource) else type(obj).__name__


def _apply(store: feast.FeatureStore, s: Settings) -> dict:
    """Apply the repository's definitions to ``store``, removing the ones it no longer defines."""
    started = time.perf_counter()
    objects = _repo_objects(s)
    names = {(_kind(o), o.name) for o in objects}
    stale: list[Any] = [
        o
        for o in (
            *store.list_feature_services(),
            *store.list_on_demand_feature_views(),
            *store.list_feature_views(),
            *store.list_entities(),
            *store.list_data_sources(),
        )
        if (_kind(o), o.name) not in names
    ]
    with quiet_feast_calls():
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


def plan_definitions(settings: Settings | None = None) -> dict:
    """What :func:`apply_definitions` would change in the registry: Feast's plan, written nowhere.

    Returns the project, the registry (password masked), the ``changes`` (``"create feature view
    X"``, ``"update data source Y (file_options)"``, ``"delete ..."``) and how many objects are
    unchanged. An embedded registry that does not exist yet is planned against an empty one in a
    temporary folder, so planning never creates it.
    """
    s = resolve_settings(settings)
    with _store_to_plan(s) as store:
        changes, unchanged = _changes(store, s)
        project = store.project
    return {"project": project, "registry": _registry_name(s), "changes": changes, "unchanged": unchanged}


@contextlib.contextmanager
def _store_to_plan(s: Settings) -> Iterator[feast.FeatureStore]:
    """The settings' store, or a store over an empty throwaway registry when there is none yet."""
    if not s.is_cluster:
        _check_registry_file(s.feast_registry)
    if s.is_cluster or _registry_in_place(Path(s.feast_registry)):
        yield _build_store(s)
        return
    with tempfile.TemporaryDirectory(prefix="feast-plan-") as folder:
        store = _build_store(s, str(Path(folder) / "registry.sqlite"))
        try:
            yield store
        finally:
            for engine in {store.registry.write_engine, store.registry.read_engine}:
                engine.dispose()


def _changes(store: feast.FeatureStore, s: Settings) -> tuple[list[str], int]:
    """The differences between the registry of ``store`` and the repository, and the unchanged count.

    Feast's own plan, without what is not a definition: its hidden dummy entity, and the ``meta``
    of objects (creation times, a view's materialization history), which Feast also compares
    inside a view's source once the view has been materialized.
    """
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.project import Project
    from feast.repo_contents import RepoContents

    by_kind: dict[str, list[Any]] = {}
    for obj in _repo_objects(s):
        by_kind.setdefault(_kind(obj), []).append(obj)
    contents = RepoContents(
        projects=[Project(name=store.project)],
        data_sources=by_kind.get("DataSource", []),
        feature_views=by_kind.get("FeatureView", []),
        on_demand_feature_views=by_kind.get("OnDemandFeatureView", []),
        stream_feature_views=[],
        label_views=[],
        entities=by_kind.get("Entity", []),
        feature_services=by_kind.get("FeatureService", []),
        permissions=[],
    )
    with quiet_feast_calls():
        registry_diff, _, _ = store.plan(contents)
    changes, unchanged = [], 0
    for diff in registry_diff.feast_object_diffs:
        fields = sorted(
            {
                p.property_name
                for p in diff.feast_object_property_diffs
                if p.property_name != "meta"
                and _without_meta(p.val_existing) != _without_meta(p.val_declared)
            }
        )
        if diff.name == DUMMY_ENTITY_NAME:
            continue
        if diff.transition_type == TransitionType.UNCHANGED or (
            diff.transition_type == TransitionType.UPDATE and not fields
        ):
            unchanged += 1
            continue
        what = f"{diff.transition_type.name.lower()} {diff.feast_object_type.value} {diff.name}"
        changes.append(f"{what} ({', '.join(fields)})" if fields else what)
    return changes, unchanged


def _without_meta(value: Any) -> Any:
    """A property's value for comparison: protobuf messages serialized with every ``meta`` cleared."""
    from google.protobuf.message import Message

    if isinstance(value, Message):
        copy = type(value)()
        copy.CopyFrom(value)
        _clear_meta(copy)
        return copy.SerializeToString(deterministic=True)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return value
    if hasattr(value, "items"):
        return sorted((key, _without_meta(item)) for key, item in value.items())
    return [_without_meta(item) for item in value]


def _clear_meta(message: Any) -> None:
    """Clear the ``meta`` fields of ``message`` and of every message inside it, in place."""
    from google.protobuf.message import Message

    for field, value in message.ListFields():
        if field.name == "meta":
            message.ClearField("meta")
        elif field.message_type is not None:
            # One message, a repeated field, or a map (whose values may be messages).
            if isinstance(value, Message):
                items: Any = [value]
            else:
                items = value.values() if hasattr(value, "values") else value
            for item in items:
                if isinstance(item, Message):
                    _clear_meta(item)


def require_deployed(store: feast.FeatureStore, settings: Settings | None = None) -> None:
    """Raise :class:`FeaturesNotRegistered` unless the registry holds exactly the repository's
    definitions (what :func:`plan_definitions` would call no change), naming the deploy command.

    The pipeline never applies them itself: a registry that is empty, lacks a view or holds other
    definitions (another lake, an older repository) stops the task with what differs.
    """
    s = resolve_settings(settings)
    changes, _ = _changes(store, s)
    if changes:
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        where = f"The Feast registry {_registry_name(s)}"
        raise _not_deployed(s, f"{where} does not hold the definitions of {s.feast_repo}: {shown}")
