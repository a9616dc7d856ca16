"""Where a run's reports are, as links the Airflow UI can show.

Tasks push these links to XCom under the keys below; the ``mlops_reports`` plugin turns them into
buttons on the task page (operator extra links) and serves the report files themselves from the
Airflow API server under ``/mlops/``, whether they live in a local folder or on S3.
"""

from __future__ import annotations

from typing import Any

from include.mlops.core.settings import Settings, settings

DATA_DOCS = "mlops_data_docs"
DRIFT_REPORT = "mlops_drift_report"
MLFLOW_RUN = "mlops_mlflow_run"

LINK_NAMES = {
    DATA_DOCS: "GX Data Docs",
    DRIFT_REPORT: "Evidently drift report",
    MLFLOW_RUN: "MLflow run",
}

# The roots the plugin serves, by URL segment.
SERVED_ROOTS = ("reports", "quarantine")


def served_root_url(root: str, s: Settings | None = None) -> str:
    """The store URL a served root (``reports`` or ``quarantine``) stands for."""
    s = s or settings()
    return {"reports": s.reports_url, "quarantine": s.quarantine_url}[root]


def ui_path(url: str | None, s: Settings | None = None) -> str | None:
    """The path under which the plugin serves a report ``url``; None when it is not served."""
    if not url:
        return None
    s = s or settings()
    for root in SERVED_ROOTS:
        base = served_root_url(root, s).rstrip("/")
        if url == base or url.startswith(base + "/"):
            return f"/mlops/{root}/{url[len(base) :].lstrip('/')}"
    return None


def mlflow_ui_url() -> str:
    """Base URL of the MLflow UI users open (``make mlflow`` serves it locally)."""
    return settings().mlflow_ui_url


def mlflow_run_link(experiment_id: str | None, run_id: str | None) -> str | None:
    """The MLflow UI page of a run; ``None`` without an experiment or a run."""
    if not experiment_id or not run_id:
        return None
    return f"{mlflow_ui_url()}/#/experiments/{experiment_id}/runs/{run_id}"


def push(context: Any, **links: str | None) -> None:
    """Push the links that exist to the task's XCom, under the keys the plugin reads."""
    ti = context["ti"]
    for key, value in links.items():
        if value:
            ti.xcom_push(key=key, value=value)
