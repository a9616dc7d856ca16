"""Where a day's check leaves its results: the report folder and one MLflow run per day.

* ``MLOPS_REPORTS_URL/drift/dt=YYYY-MM-DD/``: ``drift.html`` and ``drift.json`` (Evidently's) and a
  compact ``verdict.json`` (atomic writes; local or S3), one stable path per day;
* the ``<model>-monitoring`` experiment: one run per day (a rerun of the day reuses it) with the
  same three files, the scores as metrics and the verdict as tags.

MLflow is imported inside the functions.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

from include.mlops import lake, registry
from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    import datetime as dt
    from pathlib import Path

    from include.mlops.core.settings import Settings
    from include.mlops.monitoring.policy import DriftSummary, Performance


REPORT_FOLDER = lake.DRIFT_REPORTS
"""The reports' dataset folder (``drift``), also the artifact folder of the MLflow run."""

HTML_NAME = "drift.html"
"""Evidently's report, for people."""

JSON_NAME = "drift.json"
"""Evidently's report, as data."""

VERDICT_NAME = "verdict.json"
"""The check's result, the policy, the drift summary and the cooldown's state."""

RUN_DAY_TAG = "drift_day"
"""Tag naming the day of a monitoring run (``YYYY-MM-DD``): how a rerun finds its day's run."""


def report_location(day: dt.date, settings: Settings | None = None) -> lake.Location:
    """The stable folder of ``day``'s drift reports: ``<reports>/drift/dt=YYYY-MM-DD``."""
    return lake.partition("reports", REPORT_FOLDER, day, settings)


def experiment_name(settings: Settings | None = None) -> str:
    """The MLflow experiment of the drift checks: ``<model_name>-monitoring``."""
    return registry.experiment_name("monitoring", settings)


def monitoring_run(day: dt.date, settings: Settings | None = None) -> str:
    """The id of ``day``'s MLflow run in the monitoring experiment, created on first use.

    A day has one run: a rerun reuses it (extra ones, e.g. from a crash between creation and
    tagging, are deleted).
    """
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    experiment_id = registry.ensure_experiment(client, experiment_name(s), s)
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


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def finite(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, not a number, NaN or infinite."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def save_evidently(snapshot: Any, folder: Path) -> None:
    """Write Evidently's snapshot into ``folder`` as :data:`HTML_NAME` and :data:`JSON_NAME`."""
    snapshot.save_html(str(folder / HTML_NAME))
    (folder / JSON_NAME).write_text(snapshot.json())


def write_reports(local: Path, folder: lake.Location, record: dict) -> None:
    """Write ``record`` as :data:`VERDICT_NAME` next to Evidently's files in ``local``; copy all
    three to the day's report ``folder``."""
    (local / VERDICT_NAME).write_text(json.dumps(json_safe(record), indent=2, default=str, allow_nan=False))
    # verdict.json last: it names the other two. An earlier check's goes first, so that a verdict
    # never stands beside another check's report (a crash in between leaves the day unchecked).
    lake.delete(folder.join(VERDICT_NAME))
    for name in (HTML_NAME, JSON_NAME, VERDICT_NAME):
        lake.write_bytes(folder.join(name), (local / name).read_bytes())


def log_run(
    run_id: str,
    local: Path,
    summary: DriftSummary,
    performance: Performance,
    result: dict,
    settings: Settings | None = None,
) -> None:
    """Log the scores, the verdict and the files of ``local`` to the day's run; then end the run
    (also when logging fails, so that the run is not left running)."""
    from mlflow.entities import Metric, RunTag

    client = registry.configure_mlflow(settings)
    try:
        now = int(time.time() * 1000)
        values = _run_values(summary, performance, result)
        metrics = [Metric(k, v, now, 0) for k, raw in values.items() if (v := finite(raw)) is not None]
        tags = [RunTag(k, v) for k, v in _run_tags(result).items()]
        client.log_batch(run_id, metrics=metrics, tags=tags)
        client.log_artifacts(run_id, str(local), artifact_path=REPORT_FOLDER)
    finally:
        client.set_terminated(run_id)


def _run_values(summary: DriftSummary, performance: Performance, result: dict) -> dict[str, float | None]:
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
    return values


def _run_tags(result: dict) -> dict[str, str]:
    return {
        RUN_DAY_TAG: result["day"],
        "model_version": str(result["model_version"]),
        "airflow_run_id": result.get("airflow_run_id") or "",
        "retrain": str(result["retrain"]).lower(),
        "signals": ",".join(result["signals"]) or "none",
        "suppressed_by": result.get("suppressed_by") or "",
        "reissue": str(bool(result.get("reissue"))).lower(),
        "train_run_id": result.get("train_run_id") or "",
        "reason": registry.cut(result["reason"]),
        "mlflow.note.content": registry.cut(result["explanation"]),
    }
