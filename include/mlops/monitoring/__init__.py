"""Monitoring: is the scored day still the world the champion learnt? Retrain when it is not.

* :mod:`.monitor`: :func:`monitor_day`, the ``check_drift`` task of ``monitor_drift``: the steps;
* :mod:`.policy`: the pure rules (:func:`decide`, :func:`psi`) and what they work on, unit-tested;
* :mod:`.predictions`: the predictions partition's columns and the deterministic sample;
* :mod:`.report`: the day's sample against the model's reference sample, Evidently's report;
* :mod:`.performance`: PR-AUC and recall on the days whose labels have all arrived;
* :mod:`.triggers`: the retrain requests and the cooldown's state, on the registered model;
* :mod:`.outputs`: the report files and the day's MLflow run.

The knobs are :class:`~include.mlops.core.policies.DriftPolicy`.
"""

from include.mlops.monitoring.monitor import (
    DayCheck,
    Decision,
    day_result,
    decide_day,
    measure_day,
    monitor_day,
    verdict_record,
)
from include.mlops.monitoring.outputs import (
    HTML_NAME,
    JSON_NAME,
    REPORT_FOLDER,
    RUN_DAY_TAG,
    VERDICT_NAME,
    experiment_name,
    finite,
    json_safe,
    log_run,
    monitoring_run,
    report_location,
    save_evidently,
    write_reports,
)
from include.mlops.monitoring.performance import measure_performance
from include.mlops.monitoring.policy import (
    MAX_DISCRETE,
    METHOD,
    SUPPRESSED_COOLDOWN,
    SUPPRESSED_LATER_DAY,
    SUPPRESSED_RUNNING,
    SUPPRESSED_SAME_DAY,
    ColumnDrift,
    DriftSummary,
    Performance,
    Verdict,
    decide,
    psi,
)
from include.mlops.monitoring.predictions import ID, SCORE, VERSION, day_version, sample_positions
from include.mlops.monitoring.report import (
    PREDICTION,
    ColumnPlan,
    DaySample,
    DriftReport,
    Reference,
    drift_report,
    load_reference,
    plan_columns,
    read_day,
    reference_for,
    register_stattest,
)
from include.mlops.monitoring.triggers import (
    TAG_AIRFLOW_RUN,
    TAG_AT,
    TAG_DAY,
    TAG_REASON,
    TAG_VERSION,
    Trigger,
    last_trigger,
    record_trigger,
    retrain_running,
)

__all__ = [
    "HTML_NAME",
    "ID",
    "JSON_NAME",
    "MAX_DISCRETE",
    "METHOD",
    "PREDICTION",
    "REPORT_FOLDER",
    "RUN_DAY_TAG",
    "SCORE",
    "SUPPRESSED_COOLDOWN",
    "SUPPRESSED_LATER_DAY",
    "SUPPRESSED_RUNNING",
    "SUPPRESSED_SAME_DAY",
    "TAG_AIRFLOW_RUN",
    "TAG_AT",
    "TAG_DAY",
    "TAG_REASON",
    "TAG_VERSION",
    "VERDICT_NAME",
    "VERSION",
    "ColumnDrift",
    "ColumnPlan",
    "DayCheck",
    "DaySample",
    "Decision",
    "DriftReport",
    "DriftSummary",
    "Performance",
    "Reference",
    "Trigger",
    "Verdict",
    "day_result",
    "day_version",
    "decide",
    "decide_day",
    "drift_report",
    "experiment_name",
    "finite",
    "json_safe",
    "last_trigger",
    "load_reference",
    "log_run",
    "measure_day",
    "measure_performance",
    "monitor_day",
    "monitoring_run",
    "plan_columns",
    "psi",
    "read_day",
    "record_trigger",
    "reference_for",
    "register_stattest",
    "report_location",
    "retrain_running",
    "sample_positions",
    "save_evidently",
    "verdict_record",
    "write_reports",
]
