"""Fixtures shared by every tier.

Service addresses come from the environment (``.ci/run`` sets them); a test that needs a service
that is not configured skips with the reason. The S3 API server is moto's, started on loopback by
the fixture when ``MLOPS_TEST_S3_ENDPOINT_URL`` does not name one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from typing import TYPE_CHECKING

import pytest

from include.mlops.core import settings as settings_module

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


SESSION_MLFLOW_URIS = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}


@pytest.fixture(autouse=True)
def _mlflow_uris_stay_put() -> Iterator[None]:
    """``mlflow.set_tracking_uri`` and ``set_registry_uri`` also set ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` in the process environment: left there, a later test (or an Airflow it
    starts) would read and write another test's registry."""
    yield
    for name, value in SESSION_MLFLOW_URIS.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def mlops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty MLOPS_HOME for one test; the settings cache is reset around it."""
    home = tmp_path / "home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    for name in ("MLOPS_LANDING_URL", "MLOPS_LAKE_URL", "MLOPS_QUARANTINE_URL", "MLOPS_REPORTS_URL"):
        monkeypatch.delenv(name, raising=False)
    settings_module.settings.cache_clear()
    yield home
    settings_module.settings.cache_clear()


def service_url(variable: str, what: str) -> str:
    """The address of a service from the environment, or a visible skip (a failure in CI).

    ``.ci/run`` sets ``MLOPS_REQUIRE_SERVICES=1`` so that a missing service fails loudly there.
    """
    url = os.environ.get(variable)
    if url:
        return url
    message = f"{what} not configured: set {variable} to run this test"
    if os.environ.get("MLOPS_REQUIRE_SERVICES"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server URL (``MLOPS_TEST_POSTGRES_URL``)."""
    return service_url("MLOPS_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis server URL (``MLOPS_TEST_REDIS_URL``)."""
    return service_url("MLOPS_TEST_REDIS_URL", "Redis")


@contextlib.contextmanager
def fresh_databases(postgres_url: str, *prefixes: str) -> Iterator[list[str]]:
    """PostgreSQL databases of the caller's own (unique names from ``prefixes``), dropped afterwards.

    Yields their URLs, in order. Never touches a database it did not create.
    """
    import psycopg2

    names = [f"{prefix}_{uuid.uuid4().hex[:10]}" for prefix in prefixes]
    base = postgres_url.rpartition("/")[0]
    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    created: list[str] = []
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'CREATE DATABASE "{name}"')
                created.append(name)
        yield [f"{base}/{name}" for name in names]
    finally:
        with conn.cursor() as cur:
            for name in created:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def fresh_database(postgres_url: str) -> Iterator[str]:
    """The URL of a PostgreSQL database of this test's own, dropped afterwards."""
    with fresh_databases(postgres_url, "mlops_test") as (url,):
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of an S3 API server on loopback: the configured one, or moto's server started here."""
    configured = os.environ.get("MLOPS_TEST_S3_ENDPOINT_URL")
    if configured:
        yield configured
        return
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the S3 server, with the client settings pointing at it."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", s3_endpoint)
    settings_module.settings.cache_clear()
    name = f"mlops-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def pytest_configure(config: pytest.Config) -> None:
    # Airflow reads its configuration on import: give the test process a throwaway home so that
    # nothing is written into the project or a user's ~/airflow.
    import tempfile

    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="mlops-airflow-test-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
