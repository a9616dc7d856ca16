"""Drift monitor: is the scored day still the world the champion learnt? Retrain when it is not.

What one day's check does (:func:`monitor_day`, the ``check_drift`` task of ``monitor_drift``)
==============================================================================================
1. Reads the day's predictions partition (only the columns it needs) and takes a deterministic
   sample of at most ``MLOPS_DRIFT_SAMPLE_ROWS`` payments (a fixed hash of ``transaction_id`` and
   ``MLOPS_SEED``): a 1M-row day costs what a 50k-row day costs, with the same verdict.
2. Loads the **reference sample** of the model version that scored the day (the out-of-time rows
   its training run logged as ``reference/reference_sample.parquet``: features as served, its
   prediction and the label), cached per version under ``MLOPS_HOME/cache/drift/``.
3. Runs an Evidently report (``DataDriftPreset`` over the key features, ``ValueDrift`` of the
   champion's score against the reference prediction). Every column is judged with the
   **population stability index over the reference's deciles** (``quantile_psi``, registered with
   Evidently; a 0/1 column is compared value by value). Evidently's built-in PSI bins the combined
   range into equal widths, which puts almost every amount ratio or score into the first bin;
   Wasserstein distance swings with a single extreme payment; p-value tests flag everything at
   50k rows. Deciles of the reference are scale-free, insensitive to a few outliers, the same for
   a monotone transform of the score, and PSI has the familiar reading (0.1 moderate, 0.25 major).
   A column is drifted when Evidently's test for it fails (score at or above its threshold).
4. Performance, once labels have arrived: for the last ``MLOPS_DRIFT_PERFORMANCE_DAYS`` days
   ``X <= day - 5`` whose labels partitions ``X+1 .. X+5`` are all in the lake and that the same
   model version scored (and that lie after its out-of-time window, so none is in-sample), joins
   the predictions with the labels and computes PR-AUC and recall at 1 % FPR, compared with the
   PR-AUC on the version's training run (``pr_auc``, its out-of-time days).
5. Decides with the pure function :func:`decide` (policy below), writes ``drift.html`` and
   ``drift.json`` (Evidently's) and a compact ``verdict.json`` to
   ``MLOPS_REPORTS_URL/drift/dt=YYYY-MM-DD/`` (atomic writes; local or S3), logs the same three
   files, the scores and the verdict to one MLflow run per day in the ``<model>-monitoring``
   experiment (a rerun of the day reuses that run), and, when the verdict is to retrain, records
   the request on the registered model (last step, so a failed check never swallows a retrain).

The rules are :mod:`.policy` (pure), the measurements :mod:`.report` and :mod:`.performance`, the
cooldown's state :mod:`.triggers`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import lake, registry
from include.mlops.core.settings import env_number, resolve_settings
from include.mlops.monitoring.performance import measure_performance
from include.mlops.monitoring.policy import DriftSummary, Performance, Policy, decide
from include.mlops.monitoring.report import (
    _ID,
    _SCORE,
    _VERSION,
    PREDICTION,
    _day_version,
    drift_report,
    load_reference,
    sample_positions,
)
from include.mlops.monitoring.triggers import last_trigger, record_trigger, retrain_running

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)

REPORT_FOLDER = lake.DRIFT_REPORTS


HTML_NAME = "drift.html"


JSON_NAME = "drift.json"


VERDICT_NAME = "verdict.json"


RUN_DAY_TAG = "drift_day"


def report_location(day: dt.date, settings: Settings | None = None) -> lake.Location:
    """The stable folder of ``day``'s drift reports: ``<reports>/drift/dt=YYYY-MM-DD``."""
    return lake.partition("reports", REPORT_FOLDER, day, settings)


def experiment_name(settings: Settings | None = None) -> str:
    """The MLflow experiment of the drift checks: ``<model_name>-monitoring``."""
    return registry.experiment_name("monitoring", settings)


def _experiment_id(client: Any, s: Settings) -> str:
    return registry.ensure_experiment(client, experiment_name(s), s)


def monitoring_run(day: dt.date, settings: Settings | None = None) -> str:
    """The id of ``day``'s MLflow run in the monitoring experiment, created on first use.

    A day has one run: a rerun reuses it (extra ones, e.g. from a crash between creation and
    tagging, are deleted).
    """

    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    experiment_id = _experiment_id(client, s)
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.{RUN_DAY_TAG} = '{day.isoformat()}'", max_results=20
    )
    if runs:
        keep, *extra = sorted(runs, key=lambda r: r.info.start_time)
        for run in extra:
            client.delete_run(run.info.run_id)
        return keep.info.run_id
    run = client.create_run(
        experiment_id, run_name=f"drift-{day.isoformat()}", tags={RUN_DAY_TAG: day.isoformat()}
    )
    return run.info.run_id


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _log_run(
    client: Any, run_id: str, folder: Path, summary: DriftSummary, performance: Performance, result: dict
) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    values: dict[str, float | None] = {
        "drift_share": summary.share,
        "drifted_features": float(len(summary.drifted)),
        "judged_features": float(summary.judged),
        "prediction_psi": summary.prediction.score if summary.prediction else None,
        "retrain": 1.0 if result["retrain"] else 0.0,
        "rows": float(result["rows"]),
        "sampled_rows": float(result["sampled_rows"]),
        "pr_auc": performance.pr_auc,
        "recall_at_1pct_fpr": performance.recall_at_1pct_fpr,
        "pr_auc_relative_drop": performance.relative_drop,
        "labelled_positives": float(performance.positives),
        "seconds": result["seconds"],
    }
    values.update({f"psi/{c.column}": c.score for c in summary.columns})
    metrics = [Metric(k, v, now, 0) for k, raw in values.items() if (v := _finite(raw)) is not None]
    tags = {
        RUN_DAY_TAG: result["day"],
        "model_version": str(result["model_version"]),
        "airflow_run_id": result.get("airflow_run_id") or "",
        "retrain": str(result["retrain"]).lower(),
        "signals": ",".join(result["signals"]) or "none",
        "suppressed_by": result.get("suppressed_by") or "",
        "reason": registry.cut(result["reason"]),
        "mlflow.note.content": registry.cut(result["explanation"]),
    }
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    client.log_artifacts(run_id, str(folder), artifact_path=REPORT_FOLDER)


def monitor_day(day: dt.date, airflow_run_id: str | None = None, settings: Settings | None = None) -> dict:
    """Check ``day`` for drift against the champion's reference; decide and record whether to retrain.

    Returns a JSON-compatible dict: ``day``, ``retrain``, ``reason`` (for ``train_model``'s conf),
    ``explanation``, ``signals``, ``suppressed_by``, ``model_version``, ``drifted_columns``
    (column -> PSI), ``drift_share``, ``prediction_psi``, ``performance``, ``report_url``,
    ``mlflow_run_id``, ``rows``, ``sampled_rows`` and ``seconds``. Raises ``FileNotFoundError``
    when the day has not been scored.
    """
    import pyarrow as pa

    started = time.perf_counter()
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    s = resolve_settings(settings)
    policy = Policy.from_env()
    client = registry.configure_mlflow(s)

    # The day, sampled.
    loc = lake.partition_file(lake.PREDICTIONS, day, s)
    if not lake.exists(loc):
        raise FileNotFoundError(
            f"no predictions for {day} at {loc.url}: run score_transactions for that day before monitoring it"
        )
    available = lake.parquet_columns(loc)
    features = [f for f in policy.features if f in available]
    absent = [f for f in policy.features if f not in available]
    table = lake.read_parquet(loc, [_ID, *features, _SCORE, _VERSION])
    rows = table.num_rows
    version = _day_version(table, day)
    keep = sample_positions(table.column(_ID), policy.sample_rows, s.seed)
    if keep is not None:
        table = table.take(pa.array(keep))
    current = table.to_pandas().rename(columns={_SCORE: PREDICTION})
    for column in features:
        current[column] = current[column].astype("float64")

    reference = load_reference(version, s)
    missing_in_reference = [f for f in features if f not in reference.columns]
    features = [f for f in features if f in reference.columns]
    reference = reference.rename(columns={registry.REFERENCE_SCORE: PREDICTION})
    for column in features:
        reference[column] = reference[column].astype("float64")
    t = time.perf_counter()
    snapshot, summary = drift_report(current, reference, features, policy)
    report_seconds = time.perf_counter() - t
    if absent or missing_in_reference:
        summary = DriftSummary(
            summary.columns, summary.prediction, (*summary.skipped, *absent, *missing_in_reference)
        )

    performance = measure_performance(day, version, policy, s)
    # Reading the cooldown state, deciding and recording a request happen under the model's lock
    # (the promotion lock), so two days monitored at once cannot both pass the cooldown.

    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        local = Path(tmp)
        snapshot.save_html(str(local / HTML_NAME))
        (local / JSON_NAME).write_text(snapshot.json())
        with registry.model_lock(env_number("MLOPS_PROMOTION_LOCK_TIMEOUT", 600.0, float), s):
            trigger = last_trigger(s)
            running = retrain_running(trigger, policy, s)
            verdict = decide(summary, performance, trigger.day if trigger else None, day, policy, running)
            run_id = monitoring_run(day, s)
            folder = report_location(day, s)
            result: dict[str, Any] = {
                **verdict.as_dict(),
                "model_version": version,
                "drifted_columns": {c.column: _finite(c.score) for c in summary.drifted},
                "drift_share": summary.share,
                "prediction_psi": _finite(summary.prediction.score) if summary.prediction else None,
                "performance": performance.as_dict(),
                "report_url": folder.url,
                "mlflow_run_id": run_id,
                "airflow_run_id": airflow_run_id,
                "rows": rows,
                "sampled_rows": len(current),
                "reference_rows": len(reference),
                "report_seconds": round(report_seconds, 3),
                "seconds": round(time.perf_counter() - started, 3),
            }
            record = {
                **result,
                "computed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "policy": policy.as_dict(),
                "drift": summary.as_dict(),
                "last_trigger": trigger.as_dict() if trigger else None,
                "retrain_running": running,
            }
            if verdict.retrain:
                record["last_trigger"] = {"day": day.isoformat(), "reason": verdict.reason, "new": True}
            (local / VERDICT_NAME).write_text(
                json.dumps(_json_safe(record), indent=2, default=str, allow_nan=False)
            )
            # verdict.json last: it names the other two.
            for name in (HTML_NAME, JSON_NAME, VERDICT_NAME):
                lake.write_bytes(folder.join(name), (local / name).read_bytes())
            try:
                _log_run(client, run_id, local, summary, performance, result)
            finally:
                client.set_terminated(run_id)
            if verdict.retrain:
                record_trigger(verdict, version, airflow_run_id, s)
    logger.info(verdict.explanation)
    return _json_safe(result)
