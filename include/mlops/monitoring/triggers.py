"""The retrain requests of the drift monitor: the cooldown's state, as tags on the registered model.

Tags ``drift_retrain_requested_day``, ``drift_retrain_reason``, ``drift_retrain_requested_at``
(UTC), ``drift_retrain_model_version`` and ``drift_retrain_airflow_run_id``: MLflow is the one
store every profile and every worker already shares.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from include.mlops import registry
from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    from include.mlops.core.policies import DriftPolicy
    from include.mlops.core.settings import Settings
    from include.mlops.monitoring.policy import Verdict


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


@dataclass(frozen=True)
class Trigger:
    """The last drift-triggered retrain request recorded on the registered model."""

    day: dt.date
    reason: str = ""
    requested_at: str = ""
    model_version: str = ""
    airflow_run_id: str = ""

    def as_dict(self) -> dict[str, str]:
        """The trigger as JSON-compatible values."""
        return {**asdict(self), "day": self.day.isoformat()}


def last_trigger(settings: Settings | None = None) -> Trigger | None:
    """The last drift-triggered retrain request, from the registered model's tags (``None``: never)."""
    from mlflow.exceptions import MlflowException

    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    try:
        tags = client.get_registered_model(s.model_name).tags
    except MlflowException:
        return None
    text = tags.get(TAG_DAY)
    if not text:
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
    )


def retrain_running(trigger: Trigger | None, policy: DriftPolicy, settings: Settings | None = None) -> bool:
    """Whether the retrain of ``trigger`` still runs: requested less than the timeout ago, no model yet.

    Its model is a version whose ``reason`` tag starts with ``drift on <trigger day>`` (the reason
    travels from the trigger to ``train_model`` and onto the version it registers).
    """
    if trigger is None or not trigger.requested_at:
        return False
    try:
        requested = dt.datetime.fromisoformat(trigger.requested_at)
    except ValueError:
        return False
    if requested.tzinfo is None:
        requested = requested.replace(tzinfo=dt.UTC)
    age_hours = (dt.datetime.now(dt.UTC) - requested).total_seconds() / 3600
    if age_hours >= policy.retrain_timeout_hours:
        return False
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    prefix = f"drift on {trigger.day.isoformat()}"
    versions = client.search_model_versions(f"name = '{s.model_name}'")
    return not any(v.tags.get("reason", "").startswith(prefix) for v in versions)


def record_trigger(
    verdict: Verdict, model_version: int, airflow_run_id: str | None, settings: Settings | None = None
) -> Trigger:
    """Record a retrain request on the registered model (the cooldown's state)."""
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    trigger = Trigger(
        day=verdict.day,
        reason=registry.cut(verdict.reason),
        requested_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        model_version=str(model_version),
        airflow_run_id=airflow_run_id or "",
    )
    # The day last: a reader that sees the new day sees its reason too.
    for key, value in (
        (TAG_REASON, trigger.reason),
        (TAG_AT, trigger.requested_at),
        (TAG_VERSION, trigger.model_version),
        (TAG_AIRFLOW_RUN, trigger.airflow_run_id),
        (TAG_DAY, trigger.day.isoformat()),
    ):
        client.set_registered_model_tag(s.model_name, key, value)
    return trigger
