"""The retrain requests of the drift monitor: the cooldown's state, as tags on the registered model.

Tags ``drift_retrain_requested_day``, ``drift_retrain_reason``, ``drift_retrain_requested_at``
(UTC), ``drift_retrain_model_version`` and ``drift_retrain_airflow_run_id``: MLflow is the one
store every profile and every worker already shares.

A request cannot be lost
========================
``check_drift`` records a request as **pending** (``drift_retrain_triggered_run_id = pending``);
``retrain_on_drift`` then triggers ``train_model`` with the run id derived from the day
(:func:`train_run_id`, ``drift__YYYY-MM-DD``; a run that already exists is not triggered twice)
and :func:`mark_triggered` writes that run id (and ``drift_retrain_triggered_at``). A request is
triggered when its ``drift_retrain_triggered_run_id`` is the run id of its day, pending otherwise:
a rerun of the day of a pending request triggers it again (the cooldown still counts from it).
A request recorded before these tags existed counts as triggered.

Reading the state fails closed: only "the registered model does not exist" means "never
requested"; any other MLflow error is raised, so that no decision is taken on a state not read.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from include.mlops import registry
from include.mlops.core.settings import resolve_settings
from include.mlops.monitoring.policy import retrain_plan

if TYPE_CHECKING:
    from include.mlops.core.policies import DriftPolicy
    from include.mlops.core.settings import Settings
    from include.mlops.monitoring.policy import Verdict


logger = logging.getLogger(__name__)

TAG_DAY = "drift_retrain_requested_day"
"""Tag: the partition day whose drift requested the last retrain (``YYYY-MM-DD``)."""

TAG_REASON = "drift_retrain_reason"
"""Tag: that request's reason (what drifted), handed to ``train_model``."""

TAG_AT = "drift_retrain_requested_at"
"""Tag: when the request was recorded (UTC, ISO 8601): how long its retrain counts as running."""

TAG_VERSION = "drift_retrain_model_version"
"""Tag: the model version that scored the drifted day."""

TAG_AIRFLOW_RUN = "drift_retrain_airflow_run_id"
"""Tag: the ``monitor_drift`` run that recorded the request."""

TAG_TRIGGERED_RUN = "drift_retrain_triggered_run_id"
"""Tag: the ``train_model`` run that the request triggered, :data:`PENDING` until then."""

TAG_TRIGGERED_AT = "drift_retrain_triggered_at"
"""Tag: when the request was marked triggered (UTC, ISO 8601)."""

PENDING = "pending"
"""The value of :data:`TAG_TRIGGERED_RUN` while the request has not triggered ``train_model``."""

TRAIN_RUN_PREFIX = "drift__"
"""The prefix of the ``train_model`` run id of a day's drift retrain (:func:`train_run_id`)."""

NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
"""The one MLflow error code that means "nothing recorded yet" (the registered model is absent)."""


def train_run_id(day: dt.date | str) -> str:
    """The ``train_model`` run id of ``day``'s drift retrain: ``drift__YYYY-MM-DD`` (deterministic,
    so that a retried or re-issued trigger finds the run it already created)."""
    text = day.isoformat() if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)).isoformat()
    return f"{TRAIN_RUN_PREFIX}{text}"


@dataclass(frozen=True)
class Trigger:
    """The last drift-triggered retrain request recorded on the registered model."""

    day: dt.date
    reason: str = ""
    requested_at: str = ""
    model_version: str = ""
    airflow_run_id: str = ""
    triggered_run_id: str | None = None
    """:data:`PENDING`, the ``train_model`` run id once triggered; ``None`` when the request
    predates the tag (it counts as triggered)."""
    triggered_at: str = ""

    @property
    def pending(self) -> bool:
        """Whether the request has not triggered ``train_model`` yet (see the module's notes)."""
        return self.triggered_run_id is not None and self.triggered_run_id != train_run_id(self.day)

    def as_dict(self) -> dict[str, str | bool | None]:
        """The trigger as JSON-compatible values."""
        return {**asdict(self), "day": self.day.isoformat(), "pending": self.pending}


def registered_model_tags(settings: Settings | None = None) -> dict[str, str] | None:
    """The registered model's tags; ``None`` only when the model does not exist (yet).

    Any other MLflow error (a server error, an unreachable server) is raised: it never reads as
    "nothing recorded".
    """
    from mlflow.exceptions import MlflowException

    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    try:
        return dict(client.get_registered_model(s.model_name).tags)
    except MlflowException as error:
        if error.error_code == NOT_FOUND:
            return None
        raise


def last_trigger(settings: Settings | None = None) -> Trigger | None:
    """The last drift-triggered retrain request, from the registered model's tags (``None``: never).

    Raises the MLflow error when the tags cannot be read (see :func:`registered_model_tags`).
    """
    s = resolve_settings(settings)
    tags = registered_model_tags(s)
    text = (tags or {}).get(TAG_DAY)
    if tags is None or not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise RuntimeError(
            f"registered model {s.model_name} has tag {TAG_DAY}={text!r}, not a YYYY-MM-DD day: "
            "fix or delete the tag in MLflow"
        ) from None
    return Trigger(
        day=day,
        reason=tags.get(TAG_REASON, ""),
        requested_at=tags.get(TAG_AT, ""),
        model_version=tags.get(TAG_VERSION, ""),
        airflow_run_id=tags.get(TAG_AIRFLOW_RUN, ""),
        triggered_run_id=tags.get(TAG_TRIGGERED_RUN),
        triggered_at=tags.get(TAG_TRIGGERED_AT, ""),
    )


def retrain_running(trigger: Trigger | None, policy: DriftPolicy, settings: Settings | None = None) -> bool:
    """Whether the retrain of ``trigger`` still runs: no model yet, and requested less than its wait
    for labelled drifted days (:func:`~.policy.retrain_plan`) plus the timeout ago.

    Its model is a version whose ``reason`` tag starts with ``drift on <trigger day>`` (the reason
    travels from the trigger to ``train_model`` and onto the version it registers). A request time
    that is not ISO 8601 and an MLflow error reading the versions are raised, never read as "done".
    """
    if trigger is None or not trigger.requested_at:
        return False
    try:
        requested = dt.datetime.fromisoformat(trigger.requested_at)
    except ValueError:
        raise RuntimeError(
            f"the drift retrain request for {trigger.day} has {TAG_AT}={trigger.requested_at!r}, "
            "not an ISO 8601 time: fix or delete the tag in MLflow"
        ) from None
    if requested.tzinfo is None:
        requested = requested.replace(tzinfo=dt.UTC)
    age_hours = (dt.datetime.now(dt.UTC) - requested).total_seconds() / 3600
    # The retrain waits (deferred) for the labels of the drifted days before it trains.
    if age_hours >= policy.retrain_timeout_hours + 24 * retrain_plan(trigger.day, policy).wait_days:
        return False
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    prefix = f"drift on {trigger.day.isoformat()}"
    versions = client.search_model_versions(f"name = '{s.model_name}'")
    return not any(v.tags.get("reason", "").startswith(prefix) for v in versions)


def record_trigger(
    verdict: Verdict, model_version: int, airflow_run_id: str | None, settings: Settings | None = None
) -> Trigger:
    """Record a retrain request on the registered model (the cooldown's state), as pending."""
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    trigger = Trigger(
        day=verdict.day,
        reason=registry.cut(verdict.reason),
        requested_at=registry.now(),
        model_version=str(model_version),
        airflow_run_id=airflow_run_id or "",
        triggered_run_id=PENDING,
    )
    # The day last: a reader that sees the new day sees its reason and its pending state too.
    for key, value in (
        (TAG_REASON, trigger.reason),
        (TAG_AT, trigger.requested_at),
        (TAG_VERSION, trigger.model_version),
        (TAG_AIRFLOW_RUN, trigger.airflow_run_id),
        (TAG_TRIGGERED_RUN, PENDING),
        (TAG_DAY, trigger.day.isoformat()),
    ):
        client.set_registered_model_tag(s.model_name, key, value)
    return trigger


def mark_triggered(day: dt.date | str, run_id: str, settings: Settings | None = None) -> dict:
    """Mark the request of ``day`` as having triggered the ``train_model`` run ``run_id``.

    Idempotent. When the recorded request is no longer ``day``'s (a later day's replaced it),
    nothing is written: that request stays as it is. Returns ``day``, ``train_run_id`` and
    ``marked`` (whether the tags were written).
    """
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    expected = train_run_id(day)
    if run_id != expected:
        raise ValueError(f"the drift retrain of {day} triggers train_model run {expected!r}, not {run_id!r}")
    s = resolve_settings(settings)
    trigger = last_trigger(s)
    result = {"day": day.isoformat(), "train_run_id": run_id, "marked": False}
    if trigger is None or trigger.day != day:
        recorded = trigger.day.isoformat() if trigger else "none"
        logger.warning("not marking the drift retrain of %s: the recorded request is %s", day, recorded)
        return result
    client = registry.configure_mlflow(s)
    # A request recorded for another day meanwhile stays pending: this run id is not its own.
    client.set_registered_model_tag(s.model_name, TAG_TRIGGERED_AT, registry.now())
    client.set_registered_model_tag(s.model_name, TAG_TRIGGERED_RUN, run_id)
    logger.info("the drift retrain requested for %s triggered train_model run %s", day, run_id)
    return {**result, "marked": True}
