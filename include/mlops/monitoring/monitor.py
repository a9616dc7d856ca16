"""Drift monitor: is the scored day still the world the champion learnt? Retrain when it is not.

What one day's check does (:func:`monitor_day`, the ``check_drift`` task of ``monitor_drift``)
==============================================================================================
1. Reads the day's predictions partition and samples it (:func:`~.report.read_day`).
2. Loads the **reference sample** of the model version that scored the day
   (:func:`~.report.reference_for`).
3. Runs Evidently's report of the key features and of the champion's score against the
   reference's prediction (:func:`~.report.drift_report`).
4. Measures the performance once labels have arrived (:func:`~.performance.measure_performance`).
5. Under the model's lock: reads the cooldown's state (:mod:`.triggers`), decides with the pure
   :func:`~.policy.decide`, writes the reports and logs them to the day's MLflow run
   (:mod:`.outputs`), and, when the verdict is to retrain, records the request on the registered
   model as pending (last, so that a failed check never swallows a retrain: its rerun asks again).
6. ``retrain_on_drift`` triggers ``train_model`` with the day's run id (``train_run_id``), and
   ``mark_retrain_triggered`` marks the request triggered (:func:`~.triggers.mark_triggered`). A
   rerun of a day whose request is still pending asks again (a reissue: nothing new is recorded,
   the cooldown still counts from the request), so a crash between recording and triggering never
   loses the retrain.

An MLflow error while reading the cooldown's state fails the check (and its retries) without a
decision: only an absent registered model reads as "never requested".

Settings: :class:`~include.mlops.core.policies.DriftPolicy` (``MLOPS_DRIFT_*``) and the model
lock's timeout, ``MLOPS_PROMOTION_LOCK_TIMEOUT``.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.policies import DriftPolicy, PromotionPolicy
from include.mlops.core.settings import resolve_settings
from include.mlops.monitoring.outputs import (
    HTML_NAME,
    finite,
    json_safe,
    log_run,
    monitoring_run,
    report_location,
    save_evidently,
    write_reports,
)
from include.mlops.monitoring.performance import measure_performance
from include.mlops.monitoring.policy import decide, retrain_plan
from include.mlops.monitoring.report import drift_report, read_day, reference_for
from include.mlops.monitoring.triggers import last_trigger, record_trigger, retrain_running, train_run_id

if TYPE_CHECKING:
    from include.mlops import lake
    from include.mlops.core.settings import Settings
    from include.mlops.monitoring.policy import Performance, Verdict
    from include.mlops.monitoring.report import DaySample, DriftReport
    from include.mlops.monitoring.triggers import Trigger


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DayCheck:
    """What one day's check measured, before deciding."""

    day: dt.date
    sample: DaySample
    reference_rows: int
    report: DriftReport
    performance: Performance


@dataclass(frozen=True)
class Decision:
    """The day's verdict and the cooldown's state it was decided on."""

    verdict: Verdict
    last_trigger: Trigger | None
    retrain_running: bool


def monitor_day(day: dt.date, airflow_run_id: str | None = None, settings: Settings | None = None) -> dict:
    """Check ``day`` for drift against the champion's reference; decide and record whether to retrain.

    Returns a JSON-compatible dict: ``day``, ``retrain``, ``reason`` (for ``train_model``'s conf),
    ``explanation``, ``signals``, ``suppressed_by``, ``reissue`` (the retrain is the day's pending
    request asked for again), ``train_run_id`` (the ``train_model`` run id to trigger when
    ``retrain``, else ``None``), ``retrain_conf`` (that run's conf: :func:`~.policy.retrain_plan`),
    ``model_version``, ``drifted_columns`` (column -> PSI), ``drift_share``, ``prediction_psi``,
    ``performance``, ``report_url``, ``report_html_url``, ``mlflow_run_id``,
    ``mlflow_experiment_id``, ``airflow_run_id``, ``rows``, ``sampled_rows``, ``reference_rows``,
    ``report_seconds`` and ``seconds``. Raises ``FileNotFoundError`` when the day has not been
    scored, :class:`~include.mlops.registry.LockTimeout` when the model's lock stays taken, the
    MLflow error when the cooldown's state cannot be read (nothing is then written or recorded).
    """
    started = time.perf_counter()
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    s = resolve_settings(settings)
    policy = DriftPolicy.from_env()
    # The lock every writer of the model's decisions shares (promotion, rollback, drift).
    lock_timeout = PromotionPolicy.from_env().lock_timeout

    check = measure_day(day, policy, s)
    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        local = Path(tmp)
        save_evidently(check.report.snapshot, local)
        # Reading the cooldown's state, deciding and recording a request happen under one lock,
        # so that two days checked at once (a backfill) cannot both pass the cooldown.
        with registry.model_lock(lock_timeout, s):
            decision = decide_day(check, policy, s)
            run_id = monitoring_run(day, s)
            folder = report_location(day, s)
            seconds = time.perf_counter() - started
            result = day_result(check, decision.verdict, run_id, folder, airflow_run_id, seconds)
            result["retrain_conf"] = (
                retrain_plan(day, policy).as_conf(decision.verdict.reason)
                if decision.verdict.retrain
                else None
            )
            result["mlflow_experiment_id"] = registry.configure_mlflow(s).get_run(run_id).info.experiment_id
            write_reports(local, folder, verdict_record(result, check, decision, policy))
            log_run(run_id, local, check.report.summary, check.performance, result, s)
            if decision.verdict.retrain and not decision.verdict.reissue:
                record_trigger(decision.verdict, check.sample.version, airflow_run_id, s)
    logger.info("%s", decision.verdict.explanation)
    return json_safe(result)


def measure_day(day: dt.date, policy: DriftPolicy, settings: Settings | None = None) -> DayCheck:
    """Sample ``day``, load the reference of the version that scored it, run the drift report and
    measure the performance: everything the decision needs but the cooldown's state."""
    s = resolve_settings(settings)
    sample, reference_rows, report = drift_of_day(day, policy, s)
    performance = measure_performance(day, sample.version, policy, s)
    return DayCheck(day, sample, reference_rows, report, performance)


def drift_of_day(
    day: dt.date, policy: DriftPolicy, settings: Settings | None = None
) -> tuple[DaySample, int, DriftReport]:
    """The day's sample, the size of the reference it was compared with (that of the version that
    scored it) and the Evidently drift report of the two."""
    s = resolve_settings(settings)
    sample = read_day(day, policy, s)
    reference = reference_for(sample.version, sample.features, s)
    report = drift_report(
        sample.frame,
        reference.frame,
        reference.features,
        policy,
        unavailable=(*sample.absent, *reference.missing),
    )
    return sample, len(reference.frame), report


def decide_day(check: DayCheck, policy: DriftPolicy, settings: Settings | None = None) -> Decision:
    """Read the cooldown's state and decide ``check``'s day (call it under the model's lock)."""
    s = resolve_settings(settings)
    trigger = last_trigger(s)
    running = retrain_running(trigger, policy, s)
    pending_reason = (trigger.reason or f"drift on {trigger.day}") if trigger and trigger.pending else None
    verdict = decide(
        check.report.summary,
        check.performance,
        trigger.day if trigger else None,
        check.day,
        policy,
        running,
        pending_reason=pending_reason,
    )
    return Decision(verdict, trigger, running)


def day_result(
    check: DayCheck,
    verdict: Verdict,
    run_id: str,
    folder: lake.Location,
    airflow_run_id: str | None,
    seconds: float,
) -> dict[str, Any]:
    """The check's result, as :func:`monitor_day` returns it (before :func:`~.outputs.json_safe`)."""
    summary = check.report.summary
    return {
        **verdict.as_dict(),
        "train_run_id": train_run_id(check.day) if verdict.retrain else None,
        "model_version": check.sample.version,
        "drifted_columns": {c.column: finite(c.score) for c in summary.drifted},
        "drift_share": summary.share,
        "prediction_psi": finite(summary.prediction.score) if summary.prediction else None,
        "performance": check.performance.as_dict(),
        "report_url": folder.url,
        "report_html_url": folder.join(HTML_NAME).url,
        "mlflow_run_id": run_id,
        "airflow_run_id": airflow_run_id,
        "rows": check.sample.rows,
        "sampled_rows": len(check.sample.frame),
        "reference_rows": check.reference_rows,
        "report_seconds": round(check.report.seconds, 3),
        "seconds": round(seconds, 3),
    }


def verdict_record(result: dict, check: DayCheck, decision: Decision, policy: DriftPolicy) -> dict[str, Any]:
    """``verdict.json``: the result with the policy, the drift summary and the cooldown's state."""
    record = {
        **result,
        "computed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "policy": policy.as_dict(),
        "drift": check.report.summary.as_dict(),
        "last_trigger": decision.last_trigger.as_dict() if decision.last_trigger else None,
        "retrain_running": decision.retrain_running,
    }
    if decision.verdict.retrain and not decision.verdict.reissue:
        # The request this check is about to record becomes the last one.
        record["last_trigger"] = {
            "day": check.day.isoformat(),
            "reason": decision.verdict.reason,
            "new": True,
            "pending": True,
        }
    return record
