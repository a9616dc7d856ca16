"""A service cut off in the middle of a task: the task fails cleanly and its retry converges.

Each service is reached through a :class:`Relay`, a TCP relay on loopback that the test can cut
(the listening socket closed and every open connection shut: the port refuses connections) and
restore on the same port. The cut happens at a chosen call inside the task; the task must raise an
error that names what failed, leave nothing partial for readers (no partial partition, no alias
moved, no decision half-recorded), and the retry with the service back must end exactly as an
uninterrupted run does:

* S3 (moto's server): ``ingest_day`` of a drop on S3, cut before each of its writes;
* PostgreSQL, the model's lock: ``evaluate_and_promote_run`` with the lock's database unreachable;
* Redis, Feast's online store (cluster profile): ``materialize_day`` cut before its first and last
  online writes;
* the MLflow tracking server: ``score_day`` cut before it reads the aliases and before it loads
  the model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse, urlunparse

import pyarrow.fs as pafs
import pytest

from include.devtools.simulator import write_drop
from include.mlops import features, lake, registry, scoring
from include.mlops.core import settings as settings_module
from include.mlops.ingest import ingest_day, settled
from tests.conftest import free_port
from tests.faults.harness import is_report
from tests.integration.bad_drops import good_table
from tests.integration.scored_world import SCORING_DAY, day
from tests.integration.test_features import (
    assert_online_matches_offline,
    build,
    feast_database,
    redis_database,
    settings_for,
    simulate_lake,
    snapshot,
)
from tests.integration.test_promotion import _mlflow_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.faults.harness import Sandbox
    from tests.integration.scored_world import World

pytestmark = pytest.mark.integration

__all__ = ["feast_database", "redis_database"]  # fixtures shared with test_features.py


# --------------------------------------------------------------------------------------------------
# A relay that can be cut


class Relay:
    """A TCP relay on a fixed loopback port in front of ``host:port``.

    :meth:`cut` closes the listening socket and shuts every relayed connection: clients see their
    connections drop and new ones refused, as with a server gone. :meth:`restore` listens again on
    the same port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.cuts = 0
        self.restore()

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the relay's."""
        parsed = urlparse(url)
        auth = parsed.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunparse(parsed._replace(netloc=netloc))

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        self.cuts += 1
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            live = list(self._sockets)
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(source)


@contextlib.contextmanager
def relay(url: str) -> Iterator[Relay]:
    parsed = urlparse(url)
    r = Relay(parsed.hostname or "127.0.0.1", parsed.port or 0)
    try:
        yield r
    finally:
        r.close()


@dataclass
class CutAt:
    """Counts the calls of a function; cuts the relay just before call number ``at`` (0: never)."""

    relay: Relay
    at: int = 0
    calls: int = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.at:
                self.relay.cut()
            return function(*args, **kwargs)

        return wrapper


def _env(mp: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        mp.setenv(name, value)
    settings_module.settings.cache_clear()


# --------------------------------------------------------------------------------------------------
# S3: ingest_day of a drop on S3

DAY = dt.date(2026, 1, 5)
DATASET = "transactions"
CUT_WRITES = (1, 2, 0)
"""The writes of ``ingest_day`` the S3 cut comes before (1: the lake partition; 0: the last)."""


def _objects(url: str) -> dict[str, bytes]:
    """Every object under an S3 folder, by path relative to it."""
    loc = lake.location(url)
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    return {
        i.path[len(loc.path) + 1 :]: lake.read_bytes(lake.Location(loc.fs, i.path, i.path))
        for i in infos
        if i.type == pafs.FileType.File
    }


def _stores(bucket: str) -> dict[str, bytes]:
    out = {}
    for store in ("lake", "quarantine", "reports"):
        out.update({f"{store}/{k}": v for k, v in _objects(f"s3://{bucket}/{store}").items()})
    return out


def _unreported(files: dict[str, bytes]) -> dict[str, bytes]:
    """Files compared byte for byte (validation results and Data Docs hold run ids and times)."""
    return {k: v for k, v in files.items() if not is_report(k)}


def _point_stores_at(mp: pytest.MonkeyPatch, endpoint: str, relay_: Relay, bucket: str) -> None:
    """Every store in ``bucket``, reached through the relay."""
    _env(mp, MLOPS_S3_ENDPOINT_URL=relay_.url(endpoint))
    for name in ("landing", "lake", "quarantine", "reports"):
        mp.setenv(f"MLOPS_{name.upper()}_URL", f"s3://{bucket}/{name}")
    settings_module.settings.cache_clear()


def _fresh_bucket(endpoint: str) -> str:
    import boto3

    name = f"mlops-fault-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_s3_cut_at_any_write_of_ingest_fails_cleanly_and_the_retry_lands_the_same_bytes(
    mlops_home: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with relay(s3_endpoint) as r:
        # The uninterrupted run: its outputs, and how many writes it makes.
        _point_stores_at(monkeypatch, s3_endpoint, r, s3_bucket)
        write_drop(settings_module.settings().landing_url, DATASET, DAY, good_table(DATASET, DAY))
        counter = CutAt(r)
        with monkeypatch.context() as mp:
            mp.setattr(lake, "write_bytes", counter.wrap(lake.write_bytes))
            expected = ingest_day(DATASET, DAY)
        after = _stores(s3_bucket)
        writes = counter.calls
        assert writes >= 2, writes
        lake_key = f"lake/{DATASET}/{lake.partition_name(DAY)}/{lake.DATA_FILE}"

        for k in sorted({k if k > 0 else writes for k in CUT_WRITES}):
            # The same drop in a bucket of its own, the S3 server cut before write k.
            bucket = _fresh_bucket(s3_endpoint)
            _point_stores_at(monkeypatch, s3_endpoint, r, bucket)
            write_drop(settings_module.settings().landing_url, DATASET, DAY, good_table(DATASET, DAY))
            landing = _objects(f"s3://{bucket}/landing")
            cut = CutAt(r, at=k)
            with monkeypatch.context() as mp:
                mp.setattr(lake, "write_bytes", cut.wrap(lake.write_bytes))
                with pytest.raises(OSError) as caught:
                    ingest_day(DATASET, DAY)
            r.restore()
            where = f"S3 cut before write {k} of {writes}"
            message = str(caught.value)
            assert "connect" in message.lower() or "network" in message.lower(), f"{where}: {message}"
            # Nothing partial: the day's partition is absent or the whole file, no other object.
            now = _stores(bucket)
            assert set(now) <= set(after), f"{where}: {sorted(set(now) - set(after))}"
            if k == 1:
                assert lake_key not in now and settled(DATASET, DAY) is None, where
            for path, data in _unreported(now).items():
                assert data == after[path], f"{where}: {path} is not whole"
            assert _objects(f"s3://{bucket}/landing") == landing, f"{where}: the landing drop changed"

            retried = ingest_day(DATASET, DAY)
            assert retried.fingerprint == expected.fingerprint, where
            assert retried.rows == expected.rows, where
            final = _stores(bucket)
            assert set(final) == set(after), f"{where}: {sorted(set(final) ^ set(after))}"
            assert _unreported(final) == _unreported(after), where
            assert json.loads(final[next(p for p in final if p.endswith("validation.json"))])["success"]
            assert _objects(f"s3://{bucket}/landing") == landing, where
        assert r.cuts == len(set(CUT_WRITES))


# --------------------------------------------------------------------------------------------------
# A copy of the scored world (its champion, features and predictions)


def _copy_world(sandbox: Sandbox, world: World) -> None:
    shutil.rmtree(sandbox.home)
    shutil.copytree(world.home, sandbox.home)
    # The copy's Feast sources read the copy's lake; the MLflow artifacts stay the world's (read only).
    features.apply_definitions()


# --------------------------------------------------------------------------------------------------
# PostgreSQL: the model's lock during a promotion


@pytest.fixture
def lock_database(fresh_database: str) -> str:
    """A fresh PostgreSQL database for the model's lock, dropped afterwards."""
    return fresh_database


def _register_champion_copy(world: World, airflow_run_id: str) -> int:
    """The world's champion booster logged and registered under the settings' model name, with the
    OOT window of the world's version, as training registers a challenger."""
    import mlflow
    import mlflow.xgboost
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    s = settings_module.settings()
    client = registry.configure_mlflow(s)
    source = client.get_model_version("card_fraud", str(world.champion_version))
    booster = mlflow.xgboost.load_model(f"runs:/{world.champion_run_id}/{registry.MODEL_ARTIFACT}")
    columns = registry.feature_columns(f"runs:/{world.champion_run_id}/{registry.MODEL_ARTIFACT}")
    experiment = registry.ensure_experiment(client, registry.experiment_name("training", s), s)
    with mlflow.start_run(experiment_id=experiment, tags={"airflow_run_id": airflow_run_id}):
        info = mlflow.xgboost.log_model(
            booster,
            name=registry.MODEL_ARTIFACT,
            signature=ModelSignature(inputs=Schema([ColSpec(DataType.double, c) for c in columns])),
            pip_requirements=registry.pip_requirements(),
        )
    tags = {
        "airflow_run_id": airflow_run_id,
        "oot_start": source.tags["oot_start"],
        "oot_end": source.tags["oot_end"],
    }
    return int(mlflow.register_model(info.model_uri, s.model_name, tags=tags).version)


def _registry_view(model: str) -> dict[str, Any]:
    """The registry as readers see it: aliases, version tags and model tags (times masked)."""
    client = registry.configure_mlflow()
    found = client.get_registered_model(model)
    versions = client.search_model_versions(f"name = '{model}'")
    masked = {"decided_at", "promoted_at", "at"}

    def clean(tags: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, value in tags.items():
            if key in masked or key.endswith("_at"):
                continue
            try:
                body = json.loads(value)
            except ValueError:
                out[key] = value
                continue
            if isinstance(body, dict):
                body = {k: v for k, v in body.items() if k not in masked and not k.endswith("_at")}
                body.pop("model", None)
                body.pop("lock", None)
            out[key] = json.dumps(body, sort_keys=True)
        return out

    return {
        "aliases": dict(found.aliases),
        "model_tags": clean(found.tags),
        "versions": {v.version: clean(v.tags) for v in versions},
        "reports": {
            v.version: len(client.list_artifacts(v.run_id, "promotion")) for v in versions if v.run_id
        },
    }


def test_an_unreachable_lock_database_stops_the_promotion_before_any_alias_moves(
    sandbox: Sandbox, shared_scored_world: World, lock_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion

    _copy_world(sandbox, shared_scored_world)
    tag = uuid.uuid4().hex[:8]
    floors = {
        "MLOPS_PROMOTION_MIN_PR_AUC": "0",
        "MLOPS_PROMOTION_MIN_RECALL_AT_1PCT_FPR": "0",
        "MLOPS_PROMOTION_BOOTSTRAP": "50",
    }
    with relay(lock_database) as r:
        _env(monkeypatch, MLOPS_LOCK_DATABASE_URL=r.url(lock_database), **floors)

        # The uninterrupted promotion, of a model of its own.
        reference = f"fault_reference_{tag}"
        _env(monkeypatch, MLOPS_MODEL_NAME=reference)
        _register_champion_copy(shared_scored_world, "run-reference")
        expected = promotion.evaluate_and_promote_run("run-reference")
        assert expected["outcome"] == "promoted", expected
        expected_view = _registry_view(reference)

        # The same promotion with the database cut off.
        model = f"fault_model_{tag}"
        _env(monkeypatch, MLOPS_MODEL_NAME=model)
        version = _register_champion_copy(shared_scored_world, "run-reference")
        before = _registry_view(model)
        r.cut()
        with pytest.raises(Exception) as caught:
            promotion.evaluate_and_promote_run("run-reference")
        assert type(caught.value).__module__.startswith("psycopg2"), repr(caught.value)
        assert str(r.port) in str(caught.value), str(caught.value)
        assert registry.champion_version() is None
        assert _registry_view(model) == before, "the failed promotion changed the registry"
        assert "decision" not in registry.configure_mlflow().get_model_version(model, str(version)).tags

        r.restore()
        retried = promotion.evaluate_and_promote_run("run-reference")
        # The same decision; the model, its run (another experiment) and the timings differ.
        differ = {"model", "experiment_id", "run_id", "seconds"}
        assert {k: v for k, v in retried.items() if k not in differ} == {
            k: v for k, v in expected.items() if k not in differ
        }
        assert registry.champion_version() == version
        assert _registry_view(model) == expected_view


# --------------------------------------------------------------------------------------------------
# Redis: Feast's online store during materialize_day (cluster profile)


def test_redis_cut_during_materialize_fails_and_the_retry_loads_the_offline_values(
    mlops_home: Path, feast_database: str, redis_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    from include.mlops.features.online_stores import BatchedRedisOnlineStore as RedisOnlineStore

    with relay(redis_database) as r:
        s = settings_for(
            mlops_home,
            MLOPS_PROFILE="cluster",
            MLOPS_FEAST_REGISTRY=feast_database,
            MLOPS_REDIS_URL=r.url(redis_database),
        )
        days = simulate_lake(s, 4)
        build(s, days[:-1])
        build(s, days[-1:], materialize=False)
        last = days[-1]
        writes = CutAt(r)
        with monkeypatch.context() as mp:
            mp.setattr(
                RedisOnlineStore, "online_write_arrow", writes.wrap(RedisOnlineStore.online_write_arrow)
            )
            features.materialize_day(days[-2], s)
        assert writes.calls >= 2, writes.calls
        client = redis.Redis.from_url(redis_database)
        expected_keys = len(snapshot(s, "customer", last)) + len(snapshot(s, "merchant", last))

        for k in sorted({1, writes.calls}):
            cut = CutAt(r, at=k)
            with monkeypatch.context() as mp:
                mp.setattr(
                    RedisOnlineStore, "online_write_arrow", cut.wrap(RedisOnlineStore.online_write_arrow)
                )
                with pytest.raises(redis.exceptions.ConnectionError) as caught:
                    features.materialize_day(last, s)
            assert str(r.port) in str(caught.value), str(caught.value)
            r.restore()
            result = features.materialize_day(last, s)
            assert sorted(result["materialized"]) == sorted([features.CUSTOMER_VIEW, features.MERCHANT_VIEW])
            assert client.dbsize() == expected_keys, f"Redis cut before write {k}"
            assert_online_matches_offline(s, last, sample=40)
        client.close()
        features.feature_store(s).teardown()


# --------------------------------------------------------------------------------------------------
# MLflow: the tracking server during score_day


def test_an_unreachable_mlflow_fails_scoring_before_any_prediction_is_written(
    sandbox: Sandbox, shared_scored_world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = day(SCORING_DAY)
    _copy_world(sandbox, shared_scored_world)
    folder = scoring.predictions_location(target)
    lake.delete(folder)
    expected = scoring.score_day(target)
    expected_bytes = lake.read_bytes(folder.join(lake.DATA_FILE))
    lake.delete(folder)

    backend = f"sqlite:///{sandbox.home / 'mlflow' / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with (
        _mlflow_server(backend, str(tmp_path / "served"), env, tmp_path / "mlflow.log") as url,
        relay(url) as r,
    ):
        _env(
            monkeypatch,
            MLFLOW_TRACKING_URI=r.url(url),
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
            MLFLOW_HTTP_REQUEST_TIMEOUT="10",
        )
        cuts = {
            "before the aliases are read": (registry, "alias_version"),
            "before the model is loaded": (registry, "load_scorer"),
        }
        for where, (module, name) in cuts.items():
            cut = CutAt(r, at=1)
            with monkeypatch.context() as mp:
                mp.setattr(module, name, cut.wrap(getattr(module, name)))
                with pytest.raises(Exception) as caught:
                    scoring.score_day(target)
            r.restore()
            message = f"{type(caught.value).__name__}: {caught.value}"
            assert str(r.port) in message or "connect" in message.lower(), f"{where}: {message}"
            assert not lake.exists(folder), f"MLflow cut {where}: predictions were written"
            with pytest.raises(FileNotFoundError):
                scoring.read_predictions(target)

            retried = scoring.score_day(target)
            assert {k: v for k, v in retried.items() if k != "seconds"} == {
                k: v for k, v in expected.items() if k != "seconds"
            }, where
            assert lake.read_bytes(folder.join(lake.DATA_FILE)) == expected_bytes, where
            assert [f.name for f in lake.list_files(folder)] == [lake.DATA_FILE], where
            lake.delete(folder)
