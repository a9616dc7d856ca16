"""The project's Airflow notifier: task callbacks and deadline alerts turned into alerts people read.

:class:`MlopsNotifier` is an Airflow 3 ``BaseNotifier``. Its ``event`` says what it reports on:

* :data:`FAILURE` (every task, through ``default_args``' ``on_failure_callback``, which Airflow
  calls after the last retry only): the task's error and log; a validation task failed by a
  rejected drop reports the quarantine instead (failed expectations, the report);
* :data:`DRIFT` (``check_drift``'s ``on_success_callback``): the day's verdict, when it found drift;
* :data:`PROMOTION` / :data:`ROLLBACK` (``evaluate_and_promote`` / ``rollback``): the decision;
* :data:`LATE_DROP` (the ingestion DAGs' deadline alert, :func:`drop_deadline`, run by the
  triggerer): the day's drop when its ``_SUCCESS`` marker is still missing.

Success callbacks read the task's return value (its XCom). Whatever goes wrong while building or
sending an alert is logged as a warning: a notification never fails the task it reports on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

from include.mlops import lake
from include.mlops.core.alerting import OpsSettings
from include.mlops.core.settings import resolve_settings
from include.mlops.ops import alerts
from include.mlops.ops.channels import deliver
from include.mlops.ops.records import DRIFT_HTML

if TYPE_CHECKING:
    from airflow.sdk import DeadlineAlert

    from include.mlops.core.settings import Settings
    from include.mlops.ops.alerts import Alert

logger = logging.getLogger(__name__)

FAILURE, DRIFT, PROMOTION, ROLLBACK, LATE_DROP = "failure", "drift", "promotion", "rollback", "late_drop"
NOTIFIER_EVENTS = (FAILURE, DRIFT, PROMOTION, ROLLBACK, LATE_DROP)
"""What a :class:`MlopsNotifier` can report on."""

RETURN_VALUE = "return_value"
"""The XCom key of a task's return value."""

REPORT_ROOTS = ("reports", "quarantine")
"""The store roots the ``mlops_reports`` plugin serves under ``/mlops/<root>/``."""

_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class MlopsNotifier(BaseNotifier):
    """Sends the alert of one ``event`` (:data:`NOTIFIER_EVENTS`) to the configured channels.

    ``dataset`` names the landing dataset of a :data:`LATE_DROP` alert; ``key`` the XCom a success
    callback reads (the task's return value by default). ``context`` is how the triggerer hands a
    deadline's context to an awaited notifier.
    """

    template_fields = ()

    def __init__(
        self, event: str = FAILURE, dataset: str | None = None, key: str = RETURN_VALUE, context: Any = None
    ) -> None:
        super().__init__(context=context)
        self.key = key
        if event not in NOTIFIER_EVENTS:
            raise ValueError(
                f"unknown notifier event {event!r}: expected one of {', '.join(NOTIFIER_EVENTS)}"
            )
        self.event = event
        self.dataset = dataset

    def notify(self, context: Any) -> None:
        """Build the event's alert from ``context`` and deliver it; never raises."""
        try:
            alert = self.alert_for(context)
            if alert is not None:
                deliver(alert)
        except Exception as exc:
            logger.warning(
                "the %s notification could not be sent: %s: %s", self.event, type(exc).__name__, exc
            )

    async def async_notify(self, context: Any) -> None:
        """:meth:`notify` in a thread, for the triggerer's event loop (deadline alerts)."""
        await asyncio.to_thread(self.notify, context)

    def alert_for(self, context: Any, settings: Settings | None = None) -> Alert | None:
        """The alert of this notifier's event for ``context``; ``None`` when there is nothing to say."""
        s = resolve_settings(settings)
        if self.event == LATE_DROP:
            return late_drop_alert(str(self.dataset), context, s)
        if self.event == FAILURE:
            return failure_alert(context, s)
        result = task_result(context, self.key)
        if self.event == DRIFT:
            verdict = result if isinstance(result, dict) else None
            return alerts.drift_checked(verdict, drift_links(verdict, s)) if verdict else None
        if not isinstance(result, dict):
            logger.warning("%s: the task returned no result to report on", self.event)
            return None
        if self.event == PROMOTION:
            version = result.get("challenger_version")
            reason = (context.get("params") or {}).get("reason")
            return alerts.promotion_decided(result, reason, model_links(version, context, s))
        return alerts.rolled_back(result, model_links(result.get("champion_after"), context, s))


# --------------------------------------------------------------------------------------------------
# What a context holds


def task_result(context: Any, key: str = RETURN_VALUE) -> Any:
    """The XCom ``key`` (the return value by default) of the context's task; ``None`` when unreadable."""
    ti = context.get("ti") or context.get("task_instance")
    try:
        return ti.xcom_pull(task_ids=ti.task_id, key=key)
    except Exception as exc:
        logger.warning("could not read the result of the task: %s", exc)
        return None


def run_day(context: Any) -> str | None:
    """The day a run works on, for display: its partition key, else its ``day`` param, else its
    logical date (the rule of ``orchestration.partition_day``, which validates it for the tasks)."""
    dag_run = context.get("dag_run")
    key = getattr(dag_run, "partition_key", None) or context.get("partition_key")
    if key:
        return str(key)
    day = (context.get("params") or {}).get("day")
    if day:
        return str(day)
    logical = context.get("logical_date")
    return logical.date().isoformat() if logical is not None else None


def airflow_url() -> str:
    """The Airflow UI's base URL (``[api] base_url``), without a trailing slash."""
    from airflow.sdk.configuration import conf

    return str(conf.get("api", "base_url", fallback="") or "").rstrip("/")


def report_link(url: str | None, s: Settings) -> str | None:
    """Where a report file can be opened: under the Airflow UI's ``/mlops/`` when the plugin serves
    its store, else the store URL itself."""
    if not url:
        return None
    for root in REPORT_ROOTS:
        base = lake.root_url(root, s).rstrip("/")
        if url.startswith(base + "/"):
            served = f"/mlops/{root}/{url[len(base) :].lstrip('/')}"
            base_url = airflow_url()
            return f"{base_url}{served}" if base_url else served
    return url


def drift_links(verdict: dict[str, Any] | None, s: Settings) -> dict[str, str]:
    """The drift report of a verdict (the HTML in its report folder)."""
    verdict = verdict or {}
    folder = verdict.get("report_url")
    page = verdict.get("report_html_url") or (f"{folder.rstrip('/')}/{DRIFT_HTML}" if folder else None)
    link = report_link(page, s)
    return {"Drift report": link} if link else {}


def model_links(version: Any, context: Any, s: Settings) -> dict[str, str]:
    """The version's page in the MLflow UI and the Airflow run."""
    found = {}
    if version is not None:
        found["Model version"] = f"{s.mlflow_ui_url}/#/models/{s.model_name}/versions/{version}"
    ti = context.get("ti")
    if ti is not None:
        found["Airflow task"] = ti.log_url
    return found


# --------------------------------------------------------------------------------------------------
# Failures and late drops


def _rejection_of(error: BaseException | None) -> BaseException | None:
    """The rejected drop behind a failure: an exception in the chain carrying a quarantine report."""
    seen = 0
    while error is not None and seen < 10:
        if all(hasattr(error, a) for a in ("dataset", "day", "report_url", "problems")):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def failure_alert(context: Any, s: Settings) -> Alert:
    """The alert of a failed task: a quarantine when a rejected drop failed it, else the error."""
    ti = context.get("ti")
    error = context.get("exception")
    links = {"Task log": ti.log_url} if ti is not None else {}
    rejected = _rejection_of(error if isinstance(error, BaseException) else None)
    if rejected is not None:
        day = getattr(rejected, "day", None)
        day_text = day.isoformat() if hasattr(day, "isoformat") else str(day)
        report = str(rejected.report_url)
        try:
            rejection = json.loads(lake.read_bytes(lake.location(report)))
        except Exception as exc:
            logger.warning("could not read the quarantine report %s: %s", report, exc)
            rejection = {"message": str(rejected)}
        docs = getattr(rejected, "docs_url", None)
        links = {"Data Docs": report_link(docs, s), **links} if docs else links
        links = {"Quarantine report": report_link(report, s) or report, **links}
        return alerts.drop_quarantined(str(rejected.dataset), day_text, rejection, rejected.problems, links)
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    return alerts.task_failed(
        dag_id, task_id, run_day(context), getattr(ti, "try_number", None), error, links
    )


def deadline_day(dag_run: dict[str, Any]) -> str | None:
    """The day of a run as a deadline's context describes it (partition key, ``day`` conf, logical date)."""
    for value in (
        dag_run.get("partition_key"),
        (dag_run.get("conf") or {}).get("day"),
        dag_run.get("logical_date"),
    ):
        text = str(value)[:10] if value else ""
        if _DAY.fullmatch(text):
            return text
    return None


def late_drop_alert(dataset: str, context: Any, s: Settings) -> Alert | None:
    """The alert of a missed drop deadline; ``None`` once the drop's ``_SUCCESS`` marker is there."""
    dag_run = dict(context.get("dag_run") or {})
    day = deadline_day(dag_run)
    deadline = (context.get("deadline") or {}).get("deadline_time")
    when = deadline.strftime("%Y-%m-%d %H:%M UTC") if isinstance(deadline, dt.datetime) else str(deadline)
    if day is None:
        logger.warning(
            "%s deadline missed by run %s, whose day is unknown", dataset, dag_run.get("dag_run_id")
        )
        return alerts.drop_late(dataset, "an unknown day", when, "(unknown)", {})
    marker = lake.partition("landing", dataset, day, s).join(lake.SUCCESS_MARKER)
    if lake.exists(marker):
        return None
    base = airflow_url()
    run_id = dag_run.get("dag_run_id")
    links = {"Airflow run": f"{base}/dags/{dag_run.get('dag_id')}/runs/{run_id}"} if base and run_id else {}
    return alerts.drop_late(dataset, day, when, marker.url, links)


def drop_deadline(dataset: str, ops: OpsSettings | None = None) -> DeadlineAlert:
    """The deadline alert of an ingestion DAG: ``MLOPS_ALERT_DROP_DEADLINE_HOURS`` after the run is
    queued (the scheduled run of day D is queued at 00:00 UTC on D+1), the triggerer awaits a
    :data:`LATE_DROP` notifier, which alerts unless the drop has landed by then. The sensor is not
    touched: it keeps waiting until its own timeout."""
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    ops = ops or OpsSettings.from_env()
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(hours=ops.drop_deadline_hours),
        callback=AsyncCallback(MlopsNotifier, kwargs={"event": LATE_DROP, "dataset": dataset}),
        name=f"{dataset}_drop_deadline",
    )
