"""Train the fraud model as of a day; log, register and mark the version ``challenger``.

:func:`train` reads as its steps, one module each:

1. the window of labelled days, checked against the lake (:mod:`.window`);
2. the labelled rows with their Feast features (:mod:`.dataset`, :class:`~.dataset.TrainingSet`);
3. the model and its baseline (:mod:`.model`, :class:`~.model.FitResult`);
4. their metrics on the out-of-time days (:mod:`.evaluation`, :class:`~.evaluation.Evaluation`);
5. the lineage: code version, partition fingerprints, validation results (:mod:`.lineage`);
6. one MLflow run and one registered version (:mod:`.registration`, :class:`~.registration.Registered`).

Its knobs are :class:`~include.mlops.core.policies.TrainingSettings`, read once here. pandas,
scikit-learn, xgboost, mlflow and Feast are imported inside the functions.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from include.mlops import registry
from include.mlops.core.policies import TrainingSettings
from include.mlops.core.settings import resolve_settings
from include.mlops.training.dataset import build_dataset
from include.mlops.training.evaluation import evaluate
from include.mlops.training.lineage import record_lineage
from include.mlops.training.model import fit_models
from include.mlops.training.registration import TrainingRequest, log_and_register
from include.mlops.training.window import check_window, training_window

if TYPE_CHECKING:
    import datetime as dt

    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)


def train(
    as_of: dt.date,
    window_days: int,
    oot_days: int,
    reason: str,
    airflow_run_id: str | None,
    settings: Settings | None = None,
) -> dict:
    """Train, evaluate on the OOT days, log to MLflow, register a version and alias it ``challenger``.

    Returns ``{"version", "run_id", "model_uri", "metrics", "device", "window"}``. Raises
    :class:`~.window.TrainingDataError` when the lake lacks a partition, a label or a fraud that the
    window needs; nothing is registered then.
    """
    started = time.perf_counter()
    s = resolve_settings(settings)
    knobs = TrainingSettings.from_env()
    request = TrainingRequest(as_of, window_days, oot_days, reason, airflow_run_id)

    window = training_window(as_of, window_days, oot_days, s)
    logger.info("as of %s: %s", as_of, window.describe())
    check_window(window, s)
    data = build_dataset(window, knobs, s)
    fitted = fit_models(data, knobs, s.seed)
    evaluation = evaluate(data, fitted)
    lineage = record_lineage(window, data.train.fingerprints, data.oot.fingerprints, data.sampling, s)
    registered = log_and_register(request, window, data, fitted, evaluation, lineage, s)

    seconds = time.perf_counter() - started
    logger.info(
        "registered %s version %d as %s (run %s) in %.1fs",
        s.model_name, registered.version, registry.CHALLENGER, registered.run_id, seconds,
    )  # fmt: skip
    return {
        "version": registered.version,
        "run_id": registered.run_id,
        "model_uri": registered.model_uri,
        "metrics": {k: round(float(v), 6) for k, v in registered.metrics.items()},
        "device": fitted.device,
        "window": window.as_dict(),
    }
