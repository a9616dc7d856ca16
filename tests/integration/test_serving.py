"""The scoring service, started for real (uvicorn on a free loopback port) on the scored world.

A copy of the session's scored world (:mod:`tests.integration.scored_world`: a champion, features,
batch predictions) gets the snapshot of day ``DAYS - 1`` materialized into the online store, so
the store holds exactly what batch scoring used for the payments of day ``DAYS``; and a small,
different model registered as the challenger. Then:

* online and batch agree: the service scores day ``DAYS``'s payments as batch scoring did, with the
  embedded SQLite online store and (with ``MLOPS_TEST_REDIS_URL``) the cluster profile's Redis;
* the request log's partition holds the payments, their features and both models' scores;
* the canary serves a sticky share of customers with the challenger, and says so;
* a promotion (the champion alias moved) during a load of concurrent requests swaps the model
  without a failed request, and a rollback swaps it back;
* hostile requests never take the service down.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import random
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pytest

from include.mlops import features, registry, scoring
from include.mlops.core.schema import LABEL, SCORE_CHALLENGER, SCORE_CHAMPION, TRANSACTIONS
from include.mlops.core.serving_settings import ServingSettings
from include.mlops.core.settings import load_settings
from include.mlops.serving import ScoringService, create_app, read_request_log
from tests.conftest import free_port
from tests.integration.scored_world import DAYS, World, day, world_environment
from tests.integration.test_features import redis_database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    import httpx

    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration

SERVED_DAY = day(DAYS)
"""The payments the service scores: batch scoring scored them with the snapshot of the day before."""
SNAPSHOT_DAY = day(DAYS - 1)
TOLERANCE = 1e-9
CHALLENGER_THRESHOLD = 0.2


@dataclass(frozen=True)
class ServingWorld:
    """The copied world: its settings, the versions, and the served day's payments."""

    settings: Settings
    champion: int
    champion_run_id: str
    challenger: int
    payments: list[dict[str, Any]]


__all__ = ["redis_database"]  # a fixture shared with test_features.py


@pytest.fixture(scope="module")
def serving_world(scored_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingWorld]:
    root = tmp_path_factory.mktemp("serving-world")
    shutil.copytree(scored_world.home, root / "home")
    copy = World(root, scored_world.champion_version, scored_world.champion_run_id)
    with world_environment(copy) as s:
        features.apply_definitions(s)
        features.materialize_day(SNAPSHOT_DAY, s)
        client = registry.configure_mlflow(s)
        challenger = _register_small_model(s, copy)
        registry.move_alias(client, s.model_name, registry.CHALLENGER, challenger)
        registry.set_version_tags(
            client, s.model_name, challenger, {registry.OPERATING_THRESHOLD_TAG: CHALLENGER_THRESHOLD}
        )
        # The champion records no operating threshold: its answers carry no decision.
        with contextlib.suppress(Exception):
            client.delete_model_version_tag(
                s.model_name, str(copy.champion_version), registry.OPERATING_THRESHOLD_TAG
            )
        yield ServingWorld(s, copy.champion_version, copy.champion_run_id, challenger, _payments(s))


def _register_small_model(s: Settings, world: World | ServingWorld, extra_input: str | None = None) -> int:
    """A small model unlike the champion (same inputs, plus ``extra_input`` if given), registered
    as a new version."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    client = registry.configure_mlflow(s)
    champion = world.champion_version if isinstance(world, World) else world.champion
    columns = registry.feature_columns(registry.model_uri(champion, s))
    reference = registry.reference_sample(world.champion_run_id, s)
    if extra_input is not None:
        columns = [*columns, extra_input]
        reference[extra_input] = 0.0
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "eta": 0.3, "nthread": 1, "seed": 5},
        xgb.DMatrix(reference[columns].astype("float64"), label=reference[LABEL].to_numpy()),
        num_boost_round=7,
    )
    experiment_id = registry.ensure_experiment(client, registry.experiment_name("training", s), s)
    with mlflow.start_run(experiment_id=experiment_id, run_name="serving-challenger"):
        info = mlflow.xgboost.log_model(
            booster,
            name=registry.MODEL_ARTIFACT,
            signature=ModelSignature(inputs=Schema([ColSpec(DataType.double, c) for c in columns])),
            pip_requirements=registry.pip_requirements(),
        )
    return int(mlflow.register_model(info.model_uri, s.model_name).version)


def _payments(s: Settings) -> list[dict[str, Any]]:
    """The served day's payments as JSON-ready request bodies (every transaction column)."""
    from include.mlops import lake

    table = lake.read_table(lake.partition("lake", TRANSACTIONS.name, SERVED_DAY, s))
    rows = table.to_pylist()
    for row in rows:
        row["event_timestamp"] = row["event_timestamp"].isoformat()
    return rows


# --------------------------------------------------------------------------------------------------
# The service, on a real socket


@dataclass
class Running:
    """A service answering on ``url``."""

    url: str
    service: ScoringService
    client: httpx.Client

    def predict(self, body: Any, **headers: str) -> httpx.Response:
        return self.client.post(f"{self.url}/predict", json=body, headers=headers)


@contextlib.contextmanager
def running(s: Settings, **env: str) -> Iterator[Running]:
    """The service on a free loopback port (uvicorn in a thread), ready; stopped after."""
    import httpx
    import uvicorn

    serving = ServingSettings.from_env(
        {"MLOPS_SERVING_POLL_SECONDS": "0.2", "MLOPS_SERVING_LOG_FLUSH_SECONDS": "0.5", **env}
    )
    service = ScoringService(s, serving)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(timeout=60)
    try:
        _until(lambda: _ready(client, url), "the service to be ready", 180)
        yield Running(url, service, client)
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=120)
    assert not thread.is_alive(), "the service did not stop"


def _ready(client: httpx.Client, url: str) -> bool:
    import httpx

    try:
        return client.get(f"{url}/ready").status_code == 200
    except httpx.TransportError:
        return False


def _until(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:.0f} s for {what}")
        time.sleep(0.05)


def _batch_scores(s: Settings) -> dict[str, float]:
    predictions = scoring.read_predictions(SERVED_DAY, s)
    return dict(zip(predictions["transaction_id"], predictions[SCORE_CHAMPION], strict=True))


def _offline_scores(s: Settings, version: int, payments: list[dict[str, Any]]) -> dict[str, float]:
    """What ``version`` scores for ``payments`` on the offline store's features (batch's path)."""
    import pandas as pd

    frame = pd.DataFrame(payments)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    scores = registry.load_scorer(registry.model_uri(version, s))(features.with_features(frame, s))
    return dict(zip(frame["transaction_id"], scores, strict=True))


def _sample(world: ServingWorld, n: int, seed: int) -> list[dict[str, Any]]:
    return random.Random(seed).sample(world.payments, n)


def _post_all(running: Running, payments: list[dict[str, Any]], batch: int = 25) -> list[dict[str, Any]]:
    """Post ``payments`` in batches (the first ten alone); every answer must be 200."""
    answers = []
    for p in payments[:10]:
        response = running.predict(p)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    for i in range(10, len(payments), batch):
        response = running.predict(payments[i : i + batch])
        assert response.status_code == 200, response.text
        answers += response.json()
    assert [a["transaction_id"] for a in answers] == [p["transaction_id"] for p in payments]
    return answers


def _mismatches(answers: list[dict[str, Any]], expected: dict[str, float]) -> list[tuple[str, float, float]]:
    return [
        (a["transaction_id"], a["fraud_probability"], expected[a["transaction_id"]])
        for a in answers
        if not abs(a["fraud_probability"] - expected[a["transaction_id"]]) <= TOLERANCE
    ]


# --------------------------------------------------------------------------------------------------
# Online and batch agree


def test_online_scores_equal_batch_scores_for_the_same_payments(serving_world: ServingWorld) -> None:
    s = serving_world.settings
    payments = _sample(serving_world, 300, seed=1)
    with running(s) as service:
        answers = _post_all(service, payments)
    assert _mismatches(answers, _batch_scores(s)) == []
    assert {a["model_version"] for a in answers} == {serving_world.champion}
    assert {a["served_by"] for a in answers} == {registry.CHAMPION}
    assert {a["decision"] for a in answers} == {None}  # the champion records no threshold
    as_of = features.snapshot_timestamp(SNAPSHOT_DAY).isoformat()
    known = [a for a in answers if a["feature_freshness"]["customer"]["as_of"] is not None]
    assert len(known) > 0.9 * len(answers)
    assert {a["feature_freshness"]["customer"]["as_of"] for a in known} == {as_of}
    assert all(a["feature_freshness"]["customer"]["age_seconds"] > 0 for a in known)
    assert all(a["feature_freshness"]["customer"]["used"] for a in known)


def test_a_snapshot_past_its_ttl_serves_no_features_as_offline(serving_world: ServingWorld) -> None:
    """Payments after every snapshot's TTL: offline finds no features, nor does the service."""
    s = serving_world.settings
    # Past the TTL of the lake's last snapshot (of DAYS), so of the online store's too.
    late = features.snapshot_timestamp(day(DAYS)) + features.SNAPSHOT_TTL + dt.timedelta(hours=12)
    payments = [{**p, "event_timestamp": late.isoformat()} for p in _sample(serving_world, 40, seed=6)]
    with running(s) as service:
        answers = _post_all(service, payments, batch=10)
    assert _mismatches(answers, _offline_scores(s, serving_world.champion, payments)) == []
    for answer in answers:
        for entity in ("customer", "merchant"):
            freshness = answer["feature_freshness"][entity]
            assert freshness["used"] is False
            assert freshness["as_of"] in (None, features.snapshot_timestamp(SNAPSHOT_DAY).isoformat())


def test_the_request_log_holds_payments_features_and_both_scores(serving_world: ServingWorld) -> None:
    s = serving_world.settings
    payments = [
        {**p, "transaction_id": f"{p['transaction_id']}-logged"} for p in _sample(serving_world, 60, 2)
    ]
    with running(s) as service:
        answers = _post_all(service, payments, batch=10)
        _until(lambda: service.service.shadow.scored_rows >= len(payments), "shadow scoring")
    # Stopping the service flushed the log.
    table = read_request_log(SERVED_DAY, s).to_pandas()
    logged = table[table["transaction_id"].isin({p["transaction_id"] for p in payments})]
    assert len(logged) == len(payments)
    logged = logged.set_index("transaction_id")
    served = {a["transaction_id"]: a["fraud_probability"] for a in answers}
    assert all(logged.loc[t, SCORE_CHAMPION] == served[t] for t in served)
    shadow = _offline_scores(s, serving_world.challenger, payments)
    assert all(abs(logged.loc[t, SCORE_CHALLENGER] - shadow[t]) <= TOLERANCE for t in shadow)
    assert set(logged["challenger_version"]) == {serving_world.challenger}
    assert (logged["latency_ms"] > 0).all()
    # The logged features are batch's features (its predictions keep the champion's inputs).
    predictions = scoring.read_predictions(SERVED_DAY, s).set_index("transaction_id")
    column = "amount_to_customer_mean_30d"
    for t in served:
        online, batch = logged.loc[t, column], predictions.loc[t.removesuffix("-logged"), column]
        assert (math.isnan(online) and math.isnan(batch)) or abs(online - batch) <= TOLERANCE
    assert logged["amount"].tolist() == [p["amount"] for p in payments]


# --------------------------------------------------------------------------------------------------
# Canary


def test_the_canary_serves_a_sticky_share_of_customers_and_says_so(
    serving_world: ServingWorld, caplog: pytest.LogCaptureFixture
) -> None:
    s = serving_world.settings
    by_customer: dict[str, dict[str, Any]] = {}
    for p in serving_world.payments:
        by_customer.setdefault(p["customer_id"], p)
    payments = list(by_customer.values())[:400]
    with caplog.at_level(logging.WARNING), running(s, MLOPS_SERVING_CANARY_SHARE="0.3") as service:
        first = _post_all(service, payments)
        again = _post_all(service, list(reversed(payments)))[::-1]
    assert [a["served_by"] for a in first] == [a["served_by"] for a in again]
    canary = [a for a in first if a["served_by"] == registry.CHALLENGER]
    share, tolerance = len(canary) / len(first), 4 * (0.3 * 0.7 / len(first)) ** 0.5
    assert abs(share - 0.3) <= tolerance, share
    assert {a["model_version"] for a in canary} == {serving_world.challenger}
    assert {a["threshold"] for a in canary} == {CHALLENGER_THRESHOLD}
    expected = _offline_scores(s, serving_world.challenger, payments)
    assert _mismatches(canary, expected) == []
    for a in canary:
        assert a["decision"] == ("flag" if a["fraud_probability"] >= CHALLENGER_THRESHOLD else "pass")
    champion = [a for a in first if a["served_by"] == registry.CHAMPION]
    assert {a["decision"] for a in champion} == {None}
    # The missing threshold is said once, not once per payment.
    said = [r for r in caplog.records if "records no operating threshold" in r.getMessage()]
    assert len(said) == 1 and f"v{serving_world.champion}" in said[0].getMessage()


# --------------------------------------------------------------------------------------------------
# Blue-green: the champion alias moves under load


def test_a_promotion_under_load_swaps_the_model_without_a_failed_request(serving_world: ServingWorld) -> None:
    s = serving_world.settings
    client = registry.configure_mlflow(s)
    old, new = serving_world.champion, serving_world.challenger
    payments = _sample(serving_world, 200, seed=3)
    seen: dict[int, list[int]] = {}
    failures: list[str] = []
    stop = threading.Event()

    def load(worker: int, running: Running) -> None:
        import httpx

        versions = seen.setdefault(worker, [])
        with httpx.Client(timeout=60) as http:
            for i in range(10**6):
                if stop.is_set():
                    return
                try:
                    response = http.post(
                        f"{running.url}/predict", json=payments[(worker * 31 + i) % len(payments)]
                    )
                except httpx.HTTPError as error:
                    failures.append(f"{type(error).__name__}: {error}")
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text}")
                else:
                    versions.append(response.json()["model_version"])

    try:
        with running(s) as service:
            workers = [threading.Thread(target=load, args=(n, service)) for n in range(6)]
            for w in workers:
                w.start()
            _until(lambda: sum(map(len, seen.values())) >= 60, "answers from the old champion")
            registry.move_alias(client, s.model_name, registry.CHAMPION, new)
            _until(
                lambda: all(v and v[-1] == new for v in seen.values()), "every worker to get the new champion"
            )
            answered = sum(map(len, seen.values()))
            _until(lambda: sum(map(len, seen.values())) >= answered + 60, "answers from the new champion")
            registry.move_alias(client, s.model_name, registry.CHAMPION, old)
            _until(lambda: all(v[-1] == old for v in seen.values()), "the rollback to reach every worker")
            stop.set()
            for w in workers:
                w.join(timeout=60)
            status = service.client.get(f"{service.url}/ready").json()
    finally:
        stop.set()
        registry.move_alias(client, s.model_name, registry.CHAMPION, old)
    assert failures == []
    assert status["champion_version"] == old and status["swaps"] >= 2
    for versions in seen.values():
        # Each worker saw the old champion, then the new one, then the old one again: never a mix.
        changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        assert changes == [old, new, old], changes


def test_a_version_the_service_cannot_serve_is_never_swapped_in(serving_world: ServingWorld) -> None:
    s = serving_world.settings
    client = registry.configure_mlflow(s)
    unservable = _register_small_model(s, serving_world, extra_input="feature_nobody_serves")
    payment = serving_world.payments[0]
    try:
        with running(s) as service:
            registry.move_alias(client, s.model_name, registry.CHAMPION, unservable)

            def status() -> dict:
                return service.client.get(f"{service.url}/ready").json()

            _until(lambda: "feature_nobody_serves" in (status()["registry_problem"] or ""), "the refusal")
            answer = service.predict(payment)
            ready = status()
    finally:
        registry.move_alias(client, s.model_name, registry.CHAMPION, serving_world.champion)
    assert answer.status_code == 200 and answer.json()["model_version"] == serving_world.champion
    assert ready["ready"] is True and ready["champion_version"] == serving_world.champion


# --------------------------------------------------------------------------------------------------
# Hostile requests


def test_hostile_requests_never_take_the_service_down(serving_world: ServingWorld) -> None:
    s = serving_world.settings
    good = serving_world.payments[0]
    with running(s, MLOPS_SERVING_MAX_BATCH="20", MLOPS_SERVING_MAX_BODY_BYTES="65536") as service:
        url, http = f"{service.url}/predict", service.client

        def raw(body: bytes) -> int:
            return http.post(url, content=body, headers={"content-type": "application/json"}).status_code

        amount = f'"amount": {json.dumps(good["amount"])}'
        statuses = {
            "batch over the limit": service.predict([good] * 21).status_code,
            "body over the limit": raw(b"[" + b"1," * 40_000 + b"1]"),
            "NaN amount": raw(json.dumps(good).replace(amount, '"amount": NaN').encode()),
            "infinite amount": raw(json.dumps(good).replace(amount, '"amount": 1e999').encode()),
            "wrong types": service.predict({**good, "amount": "lots", "card_present": "no"}).status_code,
            "not JSON": raw(b"\x00\xff{"),
            "deep nesting": raw(b"[" * 5000 + b"]" * 5000),
        }
        unknown = service.predict(
            {**good, "customer_id": "nobody-" + secrets.token_hex(4), "merchant_id": "x"}
        )
        _garbage_on_the_socket(service.url)
        still = service.predict(good)
        health = http.get(f"{service.url}/health")
    assert statuses == {
        "batch over the limit": 422,
        "body over the limit": 413,
        "NaN amount": 422,
        "infinite amount": 422,
        "wrong types": 422,
        "not JSON": 422,
        "deep nesting": 422,
    }, statuses
    assert unknown.status_code == 200
    freshness = unknown.json()["feature_freshness"]
    assert freshness["customer"] == {"as_of": None, "age_seconds": None, "used": False}
    assert 0.0 <= unknown.json()["fraud_probability"] <= 1.0
    assert still.status_code == 200 and health.status_code == 200


def _garbage_on_the_socket(url: str) -> None:
    """Bytes that are not HTTP, and a connection dropped mid-request."""
    address = urlparse(url)
    for payload in (b"GARBAGE\r\n\r\n", b'POST /predict HTTP/1.1\r\nContent-Length: 100000\r\n\r\n{"a":'):
        with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                conn.recv(1024)


# --------------------------------------------------------------------------------------------------
# Cluster profile: Redis online store


def test_the_service_scores_from_redis_as_batch_did(
    redis_database: str, serving_world: ServingWorld, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(32)
    s = load_settings(
        {
            **os.environ,
            "MLOPS_PROFILE": "cluster",
            "MLOPS_FEAST_REGISTRY": f"sqlite:///{tmp_path / 'registry.sqlite'}",
            "MLOPS_REDIS_URL": redis_database,
        }
    )
    features.apply_definitions(s)
    features.materialize_day(SNAPSHOT_DAY, s)
    payments = _sample(serving_world, 120, seed=4)
    with running(s, MLOPS_SERVING_TOKEN=token) as service:
        refused = service.predict(payments[0])
        service.client.headers["authorization"] = f"Bearer {token}"
        answers = _post_all(service, payments)
    assert refused.status_code == 401
    assert _mismatches(answers, _batch_scores(s)) == []
    assert {a["feature_freshness"]["merchant"]["as_of"] for a in answers} == {
        features.snapshot_timestamp(SNAPSHOT_DAY).isoformat()
    }
    assert dt.datetime.fromisoformat(answers[0]["feature_freshness"]["merchant"]["as_of"]).tzinfo is not None
