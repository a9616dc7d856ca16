"""The registry's facts as metric samples: the champion, the versions, decisions, retrain requests.

Read from the tags that promotion, rollback and the drift monitor write on the registered model and
its versions (see :mod:`include.mlops.promotion.promote` and :mod:`include.mlops.monitoring.triggers`;
operations may not import those stages, so the tag names are repeated here and a unit test holds
them equal). MLflow is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.settings import resolve_settings
from include.mlops.ops.catalogue import Sample, sample
from include.mlops.ops.records import day_start

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)

DECISION_TAG = "decision"
"""Version tag: the last decision on the version (a gate verdict, or ``rollback``)."""
GATE_TAG = "gate_decision"
"""Version tag: the gate's verdict, kept when a rollback overwrote ``decision``."""
DECIDED_AT_TAG = "decided_at"
ROLLED_BACK_AT_TAG = "rolled_back_at"
ROLLBACK_DECISION = "rollback"
"""The ``decision`` tag of a version an operator rolled back to."""
GATE_OUTCOMES = ("promoted", "kept_champion", "rejected", "rejected_in_review", "awaiting_approval")
"""The promotion gate's verdicts on a version (``promotion.records.VERDICTS``), and a verdict that
still awaits a reviewer (``promotion.policy.AWAITING_APPROVAL``)."""

RETRAIN_REQUESTED_AT_TAG = "drift_retrain_requested_at"
RETRAIN_TRIGGERED_TAG = "drift_retrain_triggered_run_id"
RETRAIN_PENDING = "pending"

TRAINING_PHASES = {"fit": "train_seconds", "read": "read_seconds", "features": "feature_seconds"}
"""Phases of a training run, by the run metric that times them."""


def _timestamp(text: str | None) -> float | None:
    """An ISO 8601 time (a tag) as UNIX seconds; ``None`` when absent or unreadable."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def gate_verdict(tags: dict[str, str]) -> str | None:
    """The promotion gate's verdict on a version, also after a rollback overwrote ``decision``."""
    decision = tags.get(DECISION_TAG)
    verdict = tags.get(GATE_TAG) if decision == ROLLBACK_DECISION else decision
    return verdict if verdict in GATE_OUTCOMES else None


def registry_samples(settings: Settings | None = None, now: float | None = None) -> list[Sample]:
    """Every sample of the ``registry`` source; ``mlops_registry_facts_up`` is 0 (with a warning)
    when the registry cannot be read."""
    s = resolve_settings(settings)
    found = [sample("registry_facts_timestamp_seconds", time.time() if now is None else now)]
    try:
        found += model_samples(s)
    except Exception as exc:
        logger.warning("the registry's facts could not be read: %s: %s", type(exc).__name__, exc)
        return [*found, sample("registry_facts_up", 0)]
    return [*found, sample("registry_facts_up", 1)]


def _registered_model(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def model_samples(s: Settings) -> list[Sample]:
    """The samples of the registered model of the settings (none but a count before it exists)."""
    client = registry.configure_mlflow(s)
    model = _registered_model(client, s.model_name)
    if model is None:
        return [
            sample("model_versions", 0),
            *[sample("promotion_decisions", 0, outcome=o) for o in GATE_OUTCOMES],
        ]
    versions = sorted(client.search_model_versions(f"name = '{s.model_name}'"), key=lambda v: int(v.version))
    found = [sample("model_versions", len(versions))]
    verdicts = [gate_verdict(dict(v.tags or {})) for v in versions]
    found += [sample("promotion_decisions", verdicts.count(o), outcome=o) for o in GATE_OUTCOMES]
    found.append(
        sample("rollbacks", sum(1 for v in versions if (v.tags or {}).get(DECISION_TAG) == ROLLBACK_DECISION))
    )
    if versions:
        found.append(
            sample("model_last_registered_timestamp_seconds", versions[-1].creation_timestamp / 1000)
        )
        found += training_samples(client, versions[-1])
    champion = registry.alias_version(client, s.model_name, registry.CHAMPION)
    by_number = {int(v.version): v for v in versions}
    if champion is not None and champion in by_number:
        found += champion_samples(by_number[champion])
    found += retrain_samples(dict(model.tags or {}))
    return found


def champion_samples(version: Any) -> list[Sample]:
    """The champion's number, when it was registered, promoted, trained through, and its OOT PR-AUC."""
    tags = dict(version.tags or {})
    found = [
        sample("champion_version", int(version.version)),
        sample("champion_registered_timestamp_seconds", version.creation_timestamp / 1000),
    ]
    moved = _timestamp(
        tags.get(ROLLED_BACK_AT_TAG)
        if tags.get(DECISION_TAG) == ROLLBACK_DECISION
        else tags.get(DECIDED_AT_TAG)
    )
    if moved is not None:
        found.append(sample("champion_promoted_timestamp_seconds", moved))
    with contextlib.suppress(KeyError, ValueError):
        trained = day_start(dt.date.fromisoformat(tags["train_end"]))
        found.append(sample("champion_trained_through_timestamp_seconds", trained))
    with contextlib.suppress(KeyError, ValueError):
        found.append(sample("champion_oot_pr_auc", float(tags["oot_pr_auc"])))
    return found


def retrain_samples(tags: dict[str, str]) -> list[Sample]:
    """The last drift retrain request recorded on the registered model."""
    requested = _timestamp(tags.get(RETRAIN_REQUESTED_AT_TAG))
    if requested is None:
        return []
    pending = tags.get(RETRAIN_TRIGGERED_TAG) == RETRAIN_PENDING
    return [
        sample("retrain_last_requested_timestamp_seconds", requested),
        sample("retrain_pending", 1 if pending else 0),
    ]


def training_samples(client: Any, version: Any) -> list[Sample]:
    """Seconds per phase of the training run of ``version`` (none when its run cannot be read)."""
    if not version.run_id:
        return []
    try:
        metrics = dict(client.get_run(version.run_id).data.metrics)
    except Exception as exc:
        logger.warning("the training run of version %s could not be read: %s", version.version, exc)
        return []
    return [
        sample("training_seconds", metrics[key], version=version.version, phase=phase)
        for phase, key in TRAINING_PHASES.items()
        if key in metrics
    ]
