"""The channels without a network: the alert log's lines and the webhook's address from a connection.

Delivery to a real SMTP server and a real webhook receiver on loopback is in
``tests/integration/test_notifications.py``.
"""

from __future__ import annotations

import json
import multiprocessing
from typing import TYPE_CHECKING

import pytest
from airflow.models.connection import Connection

from include.mlops.core.alerting import OpsSettings
from include.mlops.core.settings import settings
from include.mlops.ops import ChannelError, alerts, append_alert_log, deliver, read_alert_log, webhook_url

if TYPE_CHECKING:
    from pathlib import Path


def _alert(i: int) -> alerts.Alert:
    return alerts.task_failed("dag", f"task_{i}", "2026-01-05", 1, RuntimeError("x" * 5000))


def _append_many(home: str, start: int) -> None:
    import os

    os.environ["MLOPS_HOME"] = home
    from include.mlops.core.settings import load_settings

    s = load_settings()
    for i in range(start, start + 50):
        append_alert_log(_alert(i), s)


def test_concurrent_writers_never_tear_or_mix_lines(mlops_home: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(mlops_home), k * 50)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    lines = (mlops_home / "alerts" / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 200
    tasks = sorted(json.loads(line)["facts"]["task_id"] for line in lines)
    assert tasks == sorted(f"task_{i}" for i in range(200))


def test_the_log_channel_is_the_default_and_keeps_the_whole_alert(mlops_home: Path) -> None:
    results = deliver(_alert(1), OpsSettings.from_env({}), settings())
    assert results == {"log": "sent"}
    (logged,) = read_alert_log()
    assert logged["event"] == "task_failed" and logged["day"] == "2026-01-05"
    assert logged["text"].startswith("[mlops critical] dag.task_1 failed for 2026-01-05")


def test_no_channel_sends_nothing(mlops_home: Path) -> None:
    assert deliver(_alert(1), OpsSettings.from_env({"MLOPS_ALERT_CHANNELS": "none"}), settings()) == {}
    assert read_alert_log() == []


@pytest.mark.parametrize(
    ("connection", "url"),
    [
        (Connection(conn_id="w", conn_type="http", host="https://hooks.slack.com/services/T/B/X"), None),
        (
            Connection(
                conn_id="w",
                conn_type="http",
                host="alerts.example.org",
                port=8443,
                extra='{"endpoint": "/in"}',
            ),
            "https://alerts.example.org:8443/in",
        ),
        (
            Connection(conn_id="w", conn_type="http", host="127.0.0.1", schema="http", port=9000),
            "http://127.0.0.1:9000/",
        ),
    ],
)
def test_the_webhook_url_is_the_connection_host_or_built_from_its_parts(
    connection: Connection, url: str | None
) -> None:
    assert webhook_url(connection) == (url or connection.host)


def test_a_connection_without_host_is_refused_by_name() -> None:
    with pytest.raises(ChannelError, match="connection 'w' has no host"):
        webhook_url(Connection(conn_id="w", conn_type="http"))
