"""Monitoring: is the scored day still the world the champion learnt? Retrain when it is not.

* :mod:`.policy`: the pure rules (:func:`decide`, :func:`psi`), unit-tested;
* :mod:`.report`: the day's sample against the model's reference sample, Evidently's report;
* :mod:`.performance`: PR-AUC and recall on the days whose labels have all arrived;
* :mod:`.triggers`: the retrain requests and the cooldown's state, on the registered model;
* :mod:`.monitor`: :func:`monitor_day`, the ``check_drift`` task of ``monitor_drift``.
"""

from include.mlops.monitoring.monitor import (
    HTML_NAME,
    JSON_NAME,
    REPORT_FOLDER,
    RUN_DAY_TAG,
    VERDICT_NAME,
    experiment_name,
    monitor_day,
    monitoring_run,
    report_location,
)
from include.mlops.monitoring.performance import (
    measure_performance,
)
from include.mlops.monitoring.policy import (
    DEFAULT_FEATURES,
    MAX_DISCRETE,
    METHOD,
    SUPPRESSED_COOLDOWN,
    SUPPRESSED_LATER_DAY,
    SUPPRESSED_RUNNING,
    SUPPRESSED_SAME_DAY,
    ColumnDrift,
    DriftSummary,
    Performance,
    Policy,
    Verdict,
    decide,
    psi,
)
from include.mlops.monitoring.report import (
    PREDICTION,
    drift_report,
    load_reference,
    register_stattest,
    sample_positions,
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
    "DEFAULT_FEATURES",
    "HTML_NAME",
    "JSON_NAME",
    "MAX_DISCRETE",
    "METHOD",
    "PREDICTION",
    "REPORT_FOLDER",
    "RUN_DAY_TAG",
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
    "ColumnDrift",
    "DriftSummary",
    "Performance",
    "Policy",
    "Trigger",
    "Verdict",
    "decide",
    "drift_report",
    "experiment_name",
    "last_trigger",
    "load_reference",
    "measure_performance",
    "monitor_day",
    "monitoring_run",
    "psi",
    "record_trigger",
    "register_stattest",
    "report_location",
    "retrain_running",
    "sample_positions",
]
