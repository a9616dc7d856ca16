"""One MLflow run per training run, and the registered model version it makes ``challenger``.

The run carries the tags and parameters that say what was trained on what (window, code version,
device, sampling), the metrics of :mod:`.evaluation`, the lineage artifact of :mod:`.lineage`,
the training and out-of-time rows as MLflow datasets (their lake source and the files' digest:
the run's "Datasets used"), the model's feature importance (``evaluation/feature_importance``)
and the drift monitor's reference sample. The model is logged with MLflow's xgboost flavour as a
raw ``Booster`` (objective ``binary:logistic``), so ``mlflow.pyfunc`` ``predict`` returns fraud
probabilities. The registered version repeats the tags promotion and rollback read, and
:data:`~include.mlops.registry.OPERATING_THRESHOLD_TAG`, the score from which a payment is
declined.
"""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import features, registry
from include.mlops.core.figures import drawing, new_figure
from include.mlops.core.settings import resolve_settings
from include.mlops.training.evaluation import draw_reference_sample
from include.mlops.training.lineage import input_datasets

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd

    from include.mlops.core.settings import Settings
    from include.mlops.training.dataset import TrainingSet
    from include.mlops.training.evaluation import Evaluation
    from include.mlops.training.lineage import Lineage
    from include.mlops.training.model import FitResult
    from include.mlops.training.window import Window


@dataclass(frozen=True)
class TrainingRequest:
    """What a training run was asked for, and by whom: recorded on the run and on the version."""

    as_of: dt.date
    window_days: int
    oot_days: int
    reason: str
    airflow_run_id: str | None


@dataclass(frozen=True)
class Registered:
    """The registered version a training run made, aliased ``challenger``."""

    version: int
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    """The metrics as logged on the run (the peak memory included)."""


def _peak_rss_mib() -> float:
    """The peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _data_window(window: Window) -> str:
    """The window as one line: ``train <start>..<end>, oot <start>..<end>``."""
    return f"train {window.train_start}..{window.train_end}, oot {window.oot_start}..{window.oot_end}"


def _run_tags(
    request: TrainingRequest, window: Window, fitted: FitResult, lineage: Lineage, s: Settings
) -> dict[str, str]:
    """The training run's tags: why it ran, on which days, with which code, where."""
    return {
        "reason": request.reason,
        "airflow_run_id": request.airflow_run_id or "",
        "data_window": _data_window(window),
        "train_start": window.train_start.isoformat(),
        "train_end": window.train_end.isoformat(),
        "oot_start": window.oot_start.isoformat(),
        "oot_end": window.oot_end.isoformat(),
        "labelled_through": window.labelled_through.isoformat(),
        "feature_service": features.FEATURE_SERVICE_NAME,
        "code_version": lineage.code_version,
        "code_sha256": lineage.code_sha256,
        "package_version": lineage.package_version,
        "profile": s.profile,
        "device": fitted.device,
        "oot_fingerprint": lineage.oot_fingerprint,
    }


def _run_params(
    request: TrainingRequest, window: Window, data: TrainingSet, fitted: FitResult, seed: int
) -> dict[str, Any]:
    """The training run's parameters: the window asked for, the sampling, the device and XGBoost's."""
    return {
        "as_of": request.as_of.isoformat(),
        "window_days": request.window_days,
        "oot_days": request.oot_days,
        "validation_start": window.validation_start.isoformat(),
        "negatives_per_positive": data.negatives_per_positive,
        "imbalance": "negative down-sampling per day, kept negatives weighted 1/keep_rate",
        "device_requested": fitted.device_requested,
        "device": fitted.device,
        "n_features": len(data.columns),
        "seed": seed,
        "baseline": "logistic regression (median impute, signed log1p, standardise, L2, C=1)",
        **{f"xgb_{k}": v for k, v in fitted.boosting.params.items() if k != "device"},
    }


def _version_tags(
    request: TrainingRequest, window: Window, fitted: FitResult, evaluation: Evaluation, lineage: Lineage
) -> dict[str, str]:
    """The registered version's tags: the OOT days promotion rebuilds, what to tell versions apart by,
    and the operating threshold (``repr``: the exact float, so every reader flags the same rows)."""
    threshold = (
        {} if evaluation.threshold is None else {registry.OPERATING_THRESHOLD_TAG: repr(evaluation.threshold)}
    )
    return {
        **threshold,
        "airflow_run_id": request.airflow_run_id or "",
        "reason": request.reason,
        "train_start": window.train_start.isoformat(),
        "train_end": window.train_end.isoformat(),
        "oot_start": window.oot_start.isoformat(),
        "oot_end": window.oot_end.isoformat(),
        "feature_service": features.FEATURE_SERVICE_NAME,
        "code_version": lineage.code_version,
        "device": fitted.device,
        "oot_pr_auc": f"{evaluation.model['pr_auc']:.6f}",
    }


def _log_model(booster: Any, data: TrainingSet) -> Any:
    """Log the booster with its signature; the model info (its ``model_uri``)."""
    import mlflow.xgboost
    import numpy as np
    import xgboost as xgb
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    sample = data.x_oot.head(200)
    output = infer_signature(sample, booster.inplace_predict(sample).astype(np.float64)).outputs
    # Every input a double (a count is missing for a new customer): cast before pyfunc predict.
    signature = ModelSignature(
        inputs=Schema([ColSpec(DataType.double, c) for c in data.columns]), outputs=output
    )
    return mlflow.xgboost.log_model(
        booster,
        name=registry.MODEL_ARTIFACT,
        signature=signature,
        pip_requirements=registry.pip_requirements(),
        model_format="ubj",
        metadata={
            "feature_service": features.FEATURE_SERVICE_NAME,
            "output": "probability of fraud (binary:logistic)",
            "xgboost_version": xgb.__version__,
        },
    )


FEATURE_IMPORTANCE_ARTIFACT = "evaluation/feature_importance"
"""The run's feature importance: ``.json`` (a table the MLflow UI shows) and ``.png``."""


def _log_feature_importance(booster: Any, columns: tuple[str, ...]) -> None:
    """The booster's total gain per feature, as a table and a bar chart of the top 20."""
    import mlflow

    gain = booster.get_score(importance_type="total_gain")
    rows = sorted(((c, float(gain.get(c, 0.0))) for c in columns), key=lambda r: -r[1])
    total = sum(g for _, g in rows) or 1.0
    mlflow.log_table(
        {"feature": [c for c, _ in rows], "total_gain": [g for _, g in rows],
         "share": [g / total for _, g in rows]},
        artifact_file=f"{FEATURE_IMPORTANCE_ARTIFACT}.json",
    )  # fmt: skip
    top = rows[:20][::-1]
    with drawing():
        fig, ax = new_figure(7, 6)
        ax.barh([c for c, _ in top], [g / total for _, g in top])
        ax.set_xlabel("share of total gain")
        ax.set_title("Feature importance (XGBoost total gain)")
        fig.tight_layout()
        mlflow.log_figure(fig, f"{FEATURE_IMPORTANCE_ARTIFACT}.png")


def _log_reference(reference: pd.DataFrame, folder: str) -> None:
    """Log the drift monitor's reference sample as parquet at :data:`registry.REFERENCE_ARTIFACT`."""
    import mlflow

    path = Path(folder) / Path(registry.REFERENCE_ARTIFACT).name
    reference.to_parquet(path, index=False)
    mlflow.log_artifact(str(path), artifact_path=str(Path(registry.REFERENCE_ARTIFACT).parent))


def log_and_register(
    request: TrainingRequest,
    window: Window,
    data: TrainingSet,
    fitted: FitResult,
    evaluation: Evaluation,
    lineage: Lineage,
    settings: Settings | None = None,
) -> Registered:
    """Log one MLflow run (tags, parameters, metrics, lineage, reference sample, model), register
    its model as a new version of the settings' model and move the alias ``challenger`` to it."""
    import mlflow

    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    experiment_id = registry.ensure_experiment(client, registry.experiment_name("training", s), s)
    run_name = f"train-{request.as_of}-{time.strftime('%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
        tags = _run_tags(request, window, fitted, lineage, s)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            mlflow.log_params(_run_params(request, window, data, fitted, s.seed))
            metrics = {**evaluation.metrics, "peak_rss_mib": _peak_rss_mib()}
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            mlflow.log_dict(lineage.record, registry.LINEAGE_ARTIFACT)
            for dataset, context in input_datasets(window, data.train, data.oot, s):
                mlflow.log_input(dataset, context=context)
            _log_feature_importance(fitted.booster, data.columns)
            _log_reference(draw_reference_sample(data, evaluation, s.seed), tmp)
            info = _log_model(fitted.booster, data)
            run_id = run.info.run_id
        tags = _version_tags(request, window, fitted, evaluation, lineage)
        registered = mlflow.register_model(info.model_uri, s.model_name, tags=tags)
    version = int(registered.version)
    description = (
        f"{_data_window(window)}; OOT PR-AUC {evaluation.model['pr_auc']:.4f} "
        f"(baseline {evaluation.baseline['pr_auc']:.4f}); reason: {request.reason}"
    )
    client.update_model_version(s.model_name, str(version), description=description)
    registry.move_alias(client, s.model_name, registry.CHALLENGER, version)
    return Registered(version, run_id, f"models:/{s.model_name}/{version}", metrics)
