"""``/predict``'s contract: validation, limits and authentication, on a service not started yet.

The service here has no store and no model (its life cycle never runs), so a valid payment gets
503; everything tested is what the API decides before the engine: 422 with what is wrong, 413,
401, and the open probes. Hostile bodies never reach a 500.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

import pytest

from include.mlops.core.serving_settings import ServingSettings
from include.mlops.core.settings import load_settings
from include.mlops.serving import ScoringService, create_app

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi.testclient import TestClient

MAX_BATCH = 5
PAYMENT: dict[str, Any] = {
    "transaction_id": "t-1",
    "customer_id": "c0000001",
    "merchant_id": "m000001",
    "event_timestamp": "2026-01-20T10:15:00Z",
    "amount": 129.9,
    "country": "DE",
    "channel": "online",
    "card_present": False,
}


def _client(tmp_path: Path, **env: str) -> TestClient:
    from fastapi.testclient import TestClient

    serving = ServingSettings.from_env({"MLOPS_SERVING_MAX_BATCH": str(MAX_BATCH), **env})
    service = ScoringService(load_settings({"MLOPS_HOME": str(tmp_path)}), serving)
    # Not a context manager: the app's lifespan (which starts the service) never runs.
    return TestClient(create_app(service), raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return _client(tmp_path, MLOPS_SERVING_MAX_BODY_BYTES="4096")


def _post(client: TestClient, body: Any, **headers: str) -> Any:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post("/predict", content=raw, headers={"content-type": "application/json", **headers})


def _where(response: Any) -> list[tuple[str, ...]]:
    return [tuple(str(p) for p in e["loc"]) for e in response.json()["detail"]]


def test_a_valid_payment_waits_for_readiness_with_503(client: TestClient) -> None:
    assert _post(client, PAYMENT).status_code == 503
    assert _post(client, [PAYMENT, {**PAYMENT, "transaction_id": "t-2"}]).status_code == 503
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False and ready.json()["reason"]
    assert client.get("/health").json() == {"status": "alive"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": -1}, "amount"),
        ({"amount": 1e9}, "amount"),
        ({"amount": "12.5"}, "amount"),
        ({"amount": None}, "amount"),
        ({"card_present": "yes"}, "card_present"),
        ({"country": "XX"}, "country"),
        ({"channel": "telepathy"}, "channel"),
        ({"currency": "DOGE"}, "currency"),
        ({"event_timestamp": "2026-01-20T10:15:00"}, "event_timestamp"),
        ({"event_timestamp": "yesterday"}, "event_timestamp"),
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": "c" * 1000}, "customer_id"),
        ({"merchant_id": 42}, "merchant_id"),
        ({"is_fraud": 1}, "is_fraud"),
    ],
)
def test_a_wrong_field_is_a_422_that_names_it(client: TestClient, change: dict, field: str) -> None:
    response = _post(client, {**PAYMENT, **change})
    assert response.status_code == 422
    assert any(loc[-1] == field for loc in _where(response)), response.json()
    # Values are not echoed back: a 1 kB id (or a token pasted into a field) stays with the client.
    assert "c" * 100 not in response.text


def test_a_missing_field_is_a_422_that_names_it(client: TestClient) -> None:
    response = _post(client, {k: v for k, v in PAYMENT.items() if k != "amount"})
    assert response.status_code == 422 and ("body", "payment", "amount") in _where(response)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_amounts_are_422_never_a_crash(client: TestClient, literal: str) -> None:
    raw = json.dumps(PAYMENT).replace('"amount": 129.9', f'"amount": {literal}')
    response = _post(client, raw)
    assert response.status_code == 422, response.text
    assert ("body", "payment", "amount") in _where(response)


def test_a_batch_over_the_limit_is_refused_with_the_limit(client: TestClient) -> None:
    batch = [{**PAYMENT, "transaction_id": f"t-{i}"} for i in range(MAX_BATCH + 1)]
    response = _post(client, batch)
    assert response.status_code == 422
    assert f"at most {MAX_BATCH}" in response.text
    assert _post(client, []).status_code == 422


def test_one_bad_payment_in_a_batch_is_named_by_its_position(client: TestClient) -> None:
    batch = [PAYMENT, {**PAYMENT, "amount": -5}, PAYMENT]
    response = _post(client, batch)
    assert response.status_code == 422 and _where(response) == [("body", "batch", "1", "amount")]


@pytest.mark.parametrize(
    "raw",
    [
        '"just a string"',
        "42",
        "null",
        "{",
        "[[[[[[[[[[]]]]]]]]]]",
        "[1, 2]",
        '{"a": {"b": [1]}}',
        b"\x00\xff{",
        "[" * 1500 + "]" * 1500,
    ],
)
def test_bodies_that_are_not_payments_get_422(client: TestClient, raw: str) -> None:
    response = _post(client, raw)
    assert response.status_code == 422, (raw, response.status_code, response.text)
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_a_body_over_the_byte_limit_is_413_before_it_is_parsed(client: TestClient) -> None:
    response = _post(client, [PAYMENT] * 200)
    assert response.status_code == 413
    streamed = client.post(
        "/predict", content=(b"x" * 1024 for _ in range(10)), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    bad_length = client.post("/predict", content=b"{}", headers={"content-length": "lots"})
    assert bad_length.status_code == 400


def test_predict_needs_the_bearer_token_and_probes_stay_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = secrets.token_urlsafe(24)
    client = _client(tmp_path, MLOPS_SERVING_TOKEN=token)
    with caplog.at_level(logging.DEBUG):
        missing = _post(client, PAYMENT)
        wrong = _post(client, PAYMENT, authorization=f"Bearer {secrets.token_urlsafe(24)}")
        basic = _post(client, PAYMENT, authorization=f"Basic {token}")
        # Unauthenticated requests learn nothing about the payload's validity.
        invalid = _post(client, {"nonsense": True})
        right = _post(client, PAYMENT, authorization=f"Bearer {token}")
        right_invalid = _post(client, {**PAYMENT, "amount": -1}, authorization=f"Bearer {token}")
        probes = [client.get("/health").status_code, client.get("/ready").status_code]
    assert [r.status_code for r in (missing, wrong, basic, invalid)] == [401, 401, 401, 401]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 503  # authenticated, valid, service not ready yet
    assert right_invalid.status_code == 422
    assert probes == [200, 503]
    assert token not in caplog.text


def test_the_openapi_schema_documents_the_payment_and_the_answer(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/ready"} <= set(schema["paths"])
    payment = schema["components"]["schemas"]["Payment"]
    assert set(payment["required"]) == {
        "transaction_id",
        "customer_id",
        "merchant_id",
        "amount",
        "country",
        "channel",
        "card_present",
    }
    assert payment["properties"]["amount"]["maximum"] > 0
    prediction = schema["components"]["schemas"]["Prediction"]["properties"]
    assert {"fraud_probability", "decision", "model_version", "served_by", "feature_freshness"} <= set(
        prediction
    )
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
