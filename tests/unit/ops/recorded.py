"""What the stages record, written by their own code for the operations tests (no hand-made JSON).

Drift verdicts come from the monitor's pure rules (``monitoring.policy.decide``) and are written by
its report writer (``monitoring.outputs.write_reports``); quarantines by ingestion's
``quarantine_day`` with a validation report made of expectation outcomes (no Great Expectations
run); landed partitions by the lake's own writer.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from include.mlops import lake
from include.mlops.core.policies import DriftPolicy
from include.mlops.core.schema import DATASETS
from include.mlops.ingest.drops import DropFile
from include.mlops.ingest.outcomes import ExpectationOutcome
from include.mlops.ingest.quarantine import quarantine_day
from include.mlops.ingest.report import ValidationReport
from include.mlops.monitoring.outputs import json_safe, report_location, write_reports
from include.mlops.monitoring.policy import ColumnDrift, DriftSummary, Performance, decide
from include.mlops.monitoring.triggers import train_run_id

if TYPE_CHECKING:
    import pytest

    from include.mlops.core.settings import Settings

POLICY = DriftPolicy(drift_share=0.3, cooldown_days=7)
FEATURES = tuple(f"feature_{i}" for i in range(10))


def summary(drifted: int, prediction: float | None = None) -> DriftSummary:
    """Ten key features of which the first ``drifted`` drifted (PSI 0.3 + 0.1 i, the others 0.01 i)."""
    columns = tuple(
        ColumnDrift(f, 0.3 + 0.1 * i if i < drifted else 0.01 * i, 0.2, i < drifted)
        for i, f in enumerate(FEATURES)
    )
    pred = None if prediction is None else ColumnDrift("prediction", prediction, 0.1, prediction >= 0.1)
    return DriftSummary(columns, pred)


def performance(pr_auc: float | None = None, recall: float | None = None) -> Performance:
    """The performance on labelled days (none measured when ``pr_auc`` is None)."""
    if pr_auc is None:
        return Performance(note="no fully labelled day yet", baseline_pr_auc=0.6)
    return Performance(
        days=("2026-01-01", "2026-01-03"),
        rows=6000,
        positives=40,
        pr_auc=pr_auc,
        recall_at_1pct_fpr=recall,
        baseline_pr_auc=0.6,
        baseline_recall_at_1pct_fpr=0.5,
    )


def verdict(
    day: dt.date,
    drifted: int = 0,
    prediction: float | None = None,
    last_trigger_day: dt.date | None = None,
    perf: Performance | None = None,
    version: int = 1,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The result of ``day``'s check as ``monitor_day`` returns it (the decision is the real rule's)."""
    drift = summary(drifted, prediction)
    perf = perf or performance()
    decided = decide(drift, perf, last_trigger_day, day, POLICY)
    folder = report_location(day, settings)
    return json_safe(
        {
            **decided.as_dict(),
            "train_run_id": train_run_id(day) if decided.retrain else None,
            "model_version": version,
            "drifted_columns": {c.column: c.score for c in drift.drifted},
            "drift_share": drift.share,
            "prediction_psi": prediction,
            "performance": perf.as_dict(),
            "report_url": folder.url,
            "mlflow_run_id": "run-of-" + day.isoformat(),
            "airflow_run_id": None,
            "rows": 2000,
            "sampled_rows": 2000,
            "reference_rows": 1000,
            "report_seconds": 1.2,
            "seconds": 3.5,
            "_summary": drift.as_dict(),
        }
    )


def record_verdict(result: dict[str, Any], settings: Settings | None = None) -> None:
    """Write a check's ``verdict.json`` (and stand-ins for Evidently's files) as the monitor does."""
    day = dt.date.fromisoformat(result["day"])
    record = {k: v for k, v in result.items() if k != "_summary"}
    record.update({"computed_at": "2026-01-20T00:00:00+00:00", "policy": POLICY.as_dict()})
    record.update({"drift": result["_summary"], "last_trigger": None, "retrain_running": False})
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp)
        (local / "drift.html").write_text("<html>drift</html>")
        (local / "drift.json").write_text("{}")
        write_reports(local, report_location(day, settings), record)


def own_mlflow(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point MLflow at the home's own store for this test only: ``mlflow.set_tracking_uri`` also
    sets ``MLFLOW_TRACKING_URI`` in the process environment, which would leak into later tests."""
    from include.mlops.core import settings as settings_module

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    settings_module.settings.cache_clear()


def land(dataset: str, day: dt.date, rows: int, settings: Settings | None = None) -> None:
    """A landed partition of ``rows`` rows (only its row count matters to operations)."""
    table = pa.table({"transaction_id": [f"t{i}" for i in range(rows)]})
    lake.write_parquet(lake.partition_file(dataset, day, settings), table)


def quarantine(dataset: str, day: dt.date, s: Settings, failed: int = 2, rows: int = 1800) -> dict[str, Any]:
    """Quarantine ``day`` of ``dataset`` as ingestion does after ``failed`` expectations failed
    (``failed=0``: a file that could not be read). Returns the rejection's fields."""
    outcomes = tuple(
        ExpectationOutcome(
            expectation="expect_column_values_to_be_between",
            column=f"col_{i}",
            description=f"col_{i} is between 0 and 50000",
            success=False,
            unexpected_count=3 + i,
            element_count=rows,
            examples=(-1.0 - i,),
        )
        for i in range(failed)
    )
    report = ValidationReport(dataset, day, False, rows, outcomes) if failed else None
    files = [DropFile("part-0.csv", 10, "0" * 64, None if failed else "not a CSV file")]
    problems = [o.explain() for o in outcomes] or ["part-0.csv: not a CSV file"]
    headline = f"{failed} of 12 expectations failed." if failed else "1 problem reading the files."
    rejection = quarantine_day(
        DATASETS[dataset], day, s, headline=headline, problems=problems, files=files, report=report
    )
    return {"report_url": rejection.report_url, "problems": rejection.problems, "message": rejection.message}
