"""Alerts delivered for real: an SMTP server and a webhook receiver on loopback, Airflow's own task
runner calling the DAGs' callbacks, and the triggerer's path of a missed deadline.

* ``deliver`` sends one alert to the mailbox (through the SMTP provider's hook and the
  ``smtp_default`` connection), the webhook (a JSON POST) and the alert log; a channel that fails
  leaves a warning and the others still deliver.
* A probe DAG built with the project's ``default_args`` and callbacks runs under ``dag.test()``
  (the task runner Airflow uses in workers): a drop rejected by the real Great Expectations suite, a
  failing task, a drift check that asks for a retrain, a quiet one, a promotion.
* The deadline's callback is awaited by Airflow's ``CallbackTrigger``, as the triggerer does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from include.mlops.core.settings import PROJECT_ROOT, settings
from include.mlops.ops import alerts, deliver, read_alert_log
from tests.conftest import free_port
from tests.unit.ops.recorded import verdict

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 1, 5)


class Mailbox:
    """An SMTP server on loopback (aiosmtpd) keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.port = free_port()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def bodies(self) -> list[str]:
        parts = [part for m in self.messages for part in m.walk() if part.get_content_type() == "text/html"]
        return [part.get_payload(decode=True).decode() for part in parts]


class Webhook:
    """An HTTP server on loopback keeping every JSON body POSTed to it (or answering ``status``)."""

    def __init__(self, status: int = 200) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.server.shutdown()


def channel_env(mailbox_port: int, webhook_url: str) -> dict[str, str]:
    """The settings and Airflow connections of the three channels (connections as AIRFLOW_CONN_*)."""
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": mailbox_port,
        "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 5, "retry_limit": 0},
    }
    return {
        "MLOPS_ALERT_CHANNELS": "log,email,webhook",
        "MLOPS_ALERT_EMAIL_TO": "oncall@example.org,fraud-team@example.org",
        "MLOPS_ALERT_EMAIL_FROM": "mlops@example.org",
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp),
        "AIRFLOW_CONN_MLOPS_ALERT_WEBHOOK": json.dumps({"conn_type": "http", "host": webhook_url}),
    }


@pytest.fixture
def channels(mlops_home: Path, mailbox: Mailbox, webhook: Webhook, monkeypatch: pytest.MonkeyPatch) -> dict:
    for name, value in channel_env(mailbox.port, webhook.url).items():
        monkeypatch.setenv(name, value)
    return {"mailbox": mailbox, "webhook": webhook, "home": mlops_home}


def test_an_alert_reaches_the_mailbox_the_webhook_and_the_log(channels: dict) -> None:
    alert = alerts.drift_checked(
        verdict(DAY, drifted=4, prediction=0.3), {"Drift report": "http://airflow/mlops/x"}
    )
    assert deliver(alert) == {"log": "sent", "email": "sent", "webhook": "sent"}

    (message,) = channels["mailbox"].messages
    assert (
        message["Subject"] == "[mlops warning] drift on 2026-01-05: retrain requested (features, prediction)"
    )
    assert message["From"] == "mlops@example.org"
    assert message["X-Envelope-To"] == "oncall@example.org, fraud-team@example.org"
    (body,) = channels["mailbox"].bodies()
    assert "What happened: the drift check of 2026-01-05 (scored by model version 1)" in body
    assert "Why: drift on 2026-01-05: 4/10 key features drifted" in body
    assert "Drift report: http://airflow/mlops/x" in body

    (posted,) = channels["webhook"].received
    assert posted["text"] == alert.text  # what Slack shows
    assert posted["alert"]["event"] == "drift_retrain_requested" and posted["alert"]["day"] == "2026-01-05"
    assert posted["alert"]["facts"]["train_run_id"] == "drift__2026-01-05"

    (logged,) = read_alert_log()
    assert logged["text"] == alert.text and logged["severity"] == "warning"


def test_a_failing_channel_warns_and_the_others_still_deliver(
    mlops_home: Path, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refusing = Webhook(status=500)
    try:
        env = channel_env(free_port(), refusing.url)  # nothing listens on that SMTP port
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        alert = alerts.task_failed("train_model", "train", "2026-01-05", 3, RuntimeError("out of memory"))
        results = deliver(alert)
    finally:
        refusing.server.shutdown()
    assert results["log"] == "sent"
    assert results["email"].startswith("failed: ") and results["webhook"].startswith("failed: ")
    assert "HTTP Error 500" in results["webhook"] and "secret" not in results["webhook"]
    assert len(refusing.received) == 1 and not mailbox.messages
    assert "was not sent by the email channel" in caplog.text
    assert "was not sent by the webhook channel" in caplog.text
    assert [a["event"] for a in read_alert_log()] == ["task_failed"]


# --------------------------------------------------------------------------------------------------
# The callbacks under Airflow's task runner

PROBE_DAG = '''
"""Tasks that end as the pipeline's do, with the project's default args and callbacks."""
import json

from airflow.sdk import dag, task

from include.mlops.orchestration import START_DATE, default_args, notifier

RETRAIN = json.loads({retrain!r})
QUIET = json.loads({quiet!r})
PROMOTION = json.loads({promotion!r})
AWAITING = {{**PROMOTION, "challenger_version": 3, "champion_before": 2, "champion_after": 2,
            "outcome": "awaiting_approval", "promoted": False}}


@dag(dag_id="ops_probe", schedule=None, start_date=START_DATE, params={{"day": "2026-01-05"}},
     default_args=default_args("monitor_drift", retries=0))
def ops_probe():
    @task(on_success_callback=notifier("drift"))
    def check_drift() -> dict:
        return RETRAIN

    @task(task_id="check_quiet_day", on_success_callback=notifier("drift"))
    def check_quiet() -> dict:
        return QUIET

    @task(on_success_callback=notifier("promotion"))
    def evaluate_and_promote() -> dict:
        return PROMOTION

    @task(on_success_callback=notifier("promotion", "promotion"))
    def judge(**context) -> None:
        context["ti"].xcom_push(key="promotion", value=AWAITING)

    @task(trigger_rule="all_done")
    def validate_and_land(**context) -> dict:
        from include.mlops.orchestration import land_day

        return land_day("transactions", context)

    @task(trigger_rule="all_done")
    def materialize() -> None:
        raise RuntimeError("the online store is locked by another writer")

    decisions = check_drift() >> check_quiet() >> evaluate_and_promote() >> judge()
    decisions >> validate_and_land() >> materialize()


ops_probe()
'''

RUNNER = """
import sys
sys.path.insert(0, sys.argv[1])
import ops_probe
run = ops_probe.ops_probe().test()
print("RUN STATE", run.state)
"""


def bad_drop(landing: str) -> None:
    """The simulator's day with negative amounts in three rows: the suite rejects it."""
    from include.devtools.simulator import write_drop
    from tests.integration.bad_drops import good_table, with_values

    table = with_values(good_table("transactions", DAY), "amount", {0: -5.0, 1: -7.5, 2: -1.0})
    write_drop(landing, "transactions", DAY, table)


def test_the_dags_callbacks_alert_under_airflows_task_runner(tmp_path: Path, channels: dict) -> None:
    home = channels["home"]
    bad_drop(str(home / "landing"))
    dags = tmp_path / "dags"
    dags.mkdir()
    promotion = {
        "model": "card_fraud",
        "challenger_version": 2,
        "champion_before": 1,
        "champion_after": 2,
        "outcome": "promoted",
        "promoted": True,
        "reason": "PR-AUC 0.7950 beats champion version 1",
        "challenger_metrics": {"pr_auc": 0.795, "recall_at_1pct_fpr": 0.61},
        "champion_metrics": {"pr_auc": 0.769, "recall_at_1pct_fpr": 0.58},
    }
    retrain, quiet = verdict(DAY, drifted=4, prediction=0.3), verdict(DAY, drifted=1)
    (dags / "ops_probe.py").write_text(
        PROBE_DAG.format(
            retrain=json.dumps(retrain), quiet=json.dumps(quiet), promotion=json.dumps(promotion)
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__API__BASE_URL="http://airflow.example.org:8080",
        PYTHONPATH=str(PROJECT_ROOT),
    )
    airflow = str(Path(sys.executable).with_name("airflow"))
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(dags)],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "RUN STATE failed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]

    logged = {a["event"]: a for a in read_alert_log(settings())}
    assert sorted(logged) == [
        "drift_retrain_requested",
        "drop_quarantined",
        "model_awaiting_review",
        "model_promoted",
        "task_failed",
    ]
    assert logged["model_awaiting_review"]["version"] == 3
    quarantined = logged["drop_quarantined"]
    assert quarantined["title"] == "transactions drop of 2026-01-05 quarantined: 1 failed expectation"
    assert re.match(
        r"amount is between 0\.0 and 50000\.0: 3 of \d+ rows fail, e\.g\. \(amount=-5\.0 ", quarantined["why"]
    )
    assert quarantined["facts"]["failed_expectations"] == ["expect_column_values_to_be_between(amount)"]
    report = quarantined["links"]["Quarantine report"]
    assert (
        report == "http://airflow.example.org:8080/mlops/quarantine/transactions/dt=2026-01-05/rejection.json"
    )
    assert quarantined["links"]["Data Docs"].startswith("http://airflow.example.org:8080/mlops/quarantine/")
    failed = logged["task_failed"]
    assert failed["title"] == "ops_probe.materialize failed for 2026-01-05"
    assert failed["why"] == "RuntimeError: the online store is locked by another writer"
    assert failed["links"]["Task log"].startswith("http://airflow.example.org:8080/dags/ops_probe/runs/")
    assert logged["model_promoted"]["version"] == 2
    assert logged["drift_retrain_requested"]["why"] == retrain["reason"]

    subjects = sorted(m["Subject"] for m in channels["mailbox"].messages)
    assert subjects == sorted(f"[mlops {a['severity']}] {a['title']}" for a in logged.values())
    assert sorted(p["alert"]["event"] for p in channels["webhook"].received) == sorted(logged)


# --------------------------------------------------------------------------------------------------
# A missed deadline, as the triggerer runs its callback


def deadline_context(day: str) -> dict:
    """What the scheduler puts in a missed deadline's callback kwargs (``Deadline.handle_miss``)."""
    return {
        "dag_run": {
            "dag_id": "ingest_transactions",
            "dag_run_id": f"scheduled__{day}",
            "partition_key": day,
            "logical_date": None,
            "conf": {},
            "state": "running",
        },
        "deadline": {"id": "0196", "deadline_time": dt.datetime(2026, 1, 6, 6, tzinfo=dt.UTC)},
    }


def run_callback_trigger(context: dict) -> list[dict]:
    """Await the deadline's callback through Airflow's ``CallbackTrigger``; its events' payloads."""
    from airflow.triggers.callback import CallbackTrigger

    from include.mlops.ops import drop_deadline

    # The notifier's path and kwargs, as the DAG serialises them.
    spec = drop_deadline("transactions").callback
    trigger = CallbackTrigger(callback_path=spec.path, callback_kwargs={**spec.kwargs, "context": context})

    async def events() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(events())


def test_a_missed_deadline_alerts_through_the_triggerer_until_the_drop_lands(channels: dict) -> None:
    from include.devtools.simulator import write_drop
    from tests.integration.bad_drops import good_table

    payloads = run_callback_trigger(deadline_context("2026-01-05"))
    assert payloads[-1]["state"] == "success", payloads
    (posted,) = channels["webhook"].received
    marker = str(channels["home"] / "landing" / "transactions" / "dt=2026-01-05" / "_SUCCESS")
    assert posted["alert"]["event"] == "drop_late" and posted["alert"]["facts"]["marker"] == marker
    assert channels["mailbox"].messages[0]["Subject"] == (
        "[mlops critical] transactions drop of 2026-01-05 has not landed by 2026-01-06 06:00 UTC"
    )

    landed = DAY + dt.timedelta(days=1)
    write_drop(str(channels["home"] / "landing"), "transactions", landed, good_table("transactions", landed))
    payloads = run_callback_trigger(deadline_context("2026-01-06"))
    assert payloads[-1]["state"] == "success"
    assert len(channels["webhook"].received) == 1 and len(channels["mailbox"].messages) == 1
