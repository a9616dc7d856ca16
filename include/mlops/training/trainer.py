"""Train the fraud model as of a day; log, register and mark the version ``challenger``.

:func:`train` reads as its steps: the window (:mod:`.window`), the labelled rows with their Feast
features (:mod:`.dataset`), the fit and its baseline (:mod:`.model`), the metrics on the
out-of-time days, the lineage (:mod:`.lineage`), then one MLflow run and one registered version
(:mod:`include.mlops.registry`). The model is logged with MLflow's xgboost flavour as a raw
``Booster`` (objective ``binary:logistic``), so ``mlflow.pyfunc`` ``predict`` returns fraud
probabilities. Its knobs are :class:`~include.mlops.core.policies.TrainingSettings`.

pandas, scikit-learn, xgboost, mlflow and Feast are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import resource
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from include.mlops import registry
from include.mlops.core.metrics import classification_metrics
from include.mlops.core.schema import LABEL, LABELS, TRANSACTIONS
from include.mlops.core.settings import resolve_settings
from include.mlops.training.dataset import (
    MAX_OOT_ROWS,
    NEGATIVES_PER_POSITIVE,
    WEIGHT,
    _env_int,
    read_oot_days,
    read_training_days,
)
from include.mlops.training.lineage import (
    code_sha256,
    code_version,
    fingerprint_digest,
    package_version,
    snapshot_fingerprints,
    validation_results,
)
from include.mlops.training.model import detect_device, fit_baseline, fit_xgboost
from include.mlops.training.window import (
    TrainingDataError,
    _days,
    check_window,
    training_window,
)

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)

MAX_BASELINE_ROWS = 500_000


REFERENCE_ROWS = 5_000


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
    :class:`TrainingDataError` when the lake lacks a partition, a label or a fraud that the window
    needs; nothing is registered then.
    """
    import mlflow
    import mlflow.xgboost
    import numpy as np
    import xgboost as xgb
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    from include.mlops import features

    started = time.perf_counter()
    s = resolve_settings(settings)
    window = training_window(as_of, window_days, oot_days, s)
    logger.info(f"as of {as_of}: {window.describe()}")
    check_window(window, s)
    seed = s.seed
    negatives_per_positive = _env_int("MLOPS_TRAIN_NEGATIVES_PER_POSITIVE", NEGATIVES_PER_POSITIVE)

    # Entity rows: labelled payments (training days re-balanced, OOT days untouched).
    t = time.perf_counter()
    train_data = read_training_days(window.train_days, window.latest_labels, negatives_per_positive, seed, s)
    oot_data = read_oot_days(
        window.oot_days, window.latest_labels, _env_int("MLOPS_TRAIN_MAX_OOT_ROWS", MAX_OOT_ROWS), seed, s
    )
    read_seconds = time.perf_counter() - t
    logger.info(
        f"read {train_data.stats['rows_total']} training payments (kept {train_data.stats['rows_kept']}) "
        f"and {oot_data.stats['rows_kept']} OOT payments in {read_seconds:.1f}s"
    )

    t = time.perf_counter()
    train_frame = features.with_features(train_data.frame, s)
    oot = features.with_features(oot_data.frame, s)
    feature_seconds = time.perf_counter() - t
    columns = list(features.FEATURE_COLUMNS)
    logger.info(
        f"features from {features.FEATURE_SERVICE_NAME} for {len(train_frame) + len(oot)} rows in "
        f"{feature_seconds:.1f}s"
    )

    in_validation = (train_frame["event_timestamp"] >= features.day_start(window.validation_start)).to_numpy()
    x_all = train_frame[columns].astype("float64")
    y_all = train_frame[LABEL].to_numpy(dtype=np.int32)
    w_all = train_frame[WEIGHT].to_numpy(dtype=np.float64)
    x_oot = oot[columns].astype("float64")
    y_oot = oot[LABEL].to_numpy(dtype=np.int32)
    fit_mask, val_mask = ~in_validation, in_validation
    for name, y in (("fit", y_all[fit_mask]), ("validation", y_all[val_mask]), ("OOT", y_oot)):
        if int(y.sum()) == 0:
            raise TrainingDataError(
                f"no fraud among the {len(y)} labelled payments of the {name} days ({window.describe()}): "
                "the metrics are undefined. Train with a longer window."
            )

    # The model.
    device = detect_device()
    t = time.perf_counter()
    booster, fit_info = fit_xgboost(
        x_all[fit_mask], y_all[fit_mask], w_all[fit_mask],
        x_all[val_mask], y_all[val_mask], w_all[val_mask],
        device, seed,
    )  # fmt: skip
    train_seconds = time.perf_counter() - t
    logger.info(
        f"xgboost on {fit_info['device']}: {fit_info['best_iteration'] + 1} rounds in {train_seconds:.1f}s"
    )
    oot_scores = booster.inplace_predict(x_oot).astype(np.float64)
    metrics = classification_metrics(y_oot, oot_scores)

    # The baseline, same split (a uniform sample of the fit rows above MAX_BASELINE_ROWS: the same
    # weighted distribution, without a dense copy of millions of rows per preprocessing step).
    t = time.perf_counter()
    fit_rows = np.flatnonzero(fit_mask)
    if len(fit_rows) > MAX_BASELINE_ROWS:
        fit_rows = np.sort(np.random.default_rng(seed).choice(fit_rows, MAX_BASELINE_ROWS, replace=False))
    baseline = fit_baseline(x_all.iloc[fit_rows], y_all[fit_rows], w_all[fit_rows])
    baseline_seconds = time.perf_counter() - t
    baseline_metrics = classification_metrics(
        y_oot, baseline.predict_proba(x_oot.to_numpy(dtype="float64"))[:, 1]
    )
    logger.info(
        f"OOT PR-AUC {metrics['pr_auc']:.4f} (baseline {baseline_metrics['pr_auc']:.4f}), "
        f"recall at 1% FPR {metrics['recall_at_1pct_fpr']:.4f}"
    )

    all_metrics: dict[str, float] = {
        **metrics,
        **{f"baseline_{k}": v for k, v in baseline_metrics.items()},
        "pr_auc_margin_over_baseline": metrics["pr_auc"] - baseline_metrics["pr_auc"],
        "validation_aucpr": fit_info["validation_aucpr"],
        "validation_logloss": fit_info["validation_logloss"],
        "best_iteration": fit_info["best_iteration"],
        "train_rows": int(fit_mask.sum()),
        "train_positives": int(y_all[fit_mask].sum()),
        "validation_rows": int(val_mask.sum()),
        "validation_positives": int(y_all[val_mask].sum()),
        "window_rows_total": train_data.stats["rows_total"],
        "window_negatives_total": train_data.stats["negatives_total"],
        "oot_rows": len(oot),
        "oot_positives": int(y_oot.sum()),
        "oot_fraud_rate": float(y_oot.mean()),
        "oot_rows_total": oot_data.stats["rows_total"],
        "duplicate_labels": train_data.stats["duplicate_labels"] + oot_data.stats["duplicate_labels"],
        "train_seconds": train_seconds,
        "baseline_train_seconds": baseline_seconds,
        "read_seconds": read_seconds,
        "feature_seconds": feature_seconds,
        "gpu": 1.0 if fit_info["device"].startswith("cuda") else 0.0,
    }

    # Lineage: partition fingerprints and the validation results the data passed.
    day_sets = [(TRANSACTIONS.name, d) for d in [*window.train_days, *window.oot_days]]
    day_sets += [(LABELS.name, d) for d in window.label_days]
    validations = validation_results(day_sets, s)
    snapshot_days = _days(window.train_start - dt.timedelta(days=2), window.oot_end - dt.timedelta(days=1))
    partitions = list({p["url"]: p for p in train_data.fingerprints + oot_data.fingerprints}.values())
    lineage = {
        "window": window.as_dict(),
        "feature_service": features.FEATURE_SERVICE_NAME,
        "partitions": partitions,
        "feature_snapshots": snapshot_fingerprints(snapshot_days, s),
        "validation": validations,
        "sampling": {
            "negatives_per_positive": negatives_per_positive,
            "training_days": train_data.stats["per_day"],
            "oot_days": oot_data.stats["per_day"],
        },
    }
    failed = [v for v in validations if v["success"] is False]
    if failed:
        logger.info(
            f"{len(failed)} partitions have a failed validation report: {[v['path'] for v in failed][:5]}"
        )

    # Reference sample for the drift monitor: OOT rows as served, with the prediction and the label.
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(oot), size=min(REFERENCE_ROWS, len(oot)), replace=False))
    reference = oot.iloc[pick][["transaction_id", "event_timestamp", *columns]].copy()
    reference[registry.REFERENCE_SCORE] = oot_scores[pick]
    reference[LABEL] = y_oot[pick]

    # MLflow: one run, one registered version.
    client = registry.configure_mlflow(s)
    experiment_id = registry.ensure_experiment(client, registry.experiment_name("training", s), s)
    version_code = code_version()
    data_window = f"train {window.train_start}..{window.train_end}, oot {window.oot_start}..{window.oot_end}"
    tags = {
        "reason": reason,
        "airflow_run_id": airflow_run_id or "",
        "data_window": data_window,
        "train_start": window.train_start.isoformat(),
        "train_end": window.train_end.isoformat(),
        "oot_start": window.oot_start.isoformat(),
        "oot_end": window.oot_end.isoformat(),
        "labelled_through": window.labelled_through.isoformat(),
        "feature_service": features.FEATURE_SERVICE_NAME,
        "code_version": version_code,
        "code_sha256": code_sha256(),
        "package_version": package_version(),
        "profile": s.profile,
        "device": fit_info["device"],
        "oot_fingerprint": fingerprint_digest(oot_data.fingerprints),
    }
    params = {
        "as_of": as_of.isoformat(),
        "window_days": window_days,
        "oot_days": oot_days,
        "validation_start": window.validation_start.isoformat(),
        "negatives_per_positive": negatives_per_positive,
        "imbalance": "negative down-sampling per day, kept negatives weighted 1/keep_rate",
        "device_requested": device,
        "device": fit_info["device"],
        "n_features": len(columns),
        "seed": seed,
        "baseline": "logistic regression (median impute, signed log1p, standardise, L2, C=1)",
        **{f"xgb_{k}": v for k, v in fit_info["params"].items() if k != "device"},
    }
    with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"train-{as_of}-{time.strftime('%H%M%S')}",
            tags=tags,
        ) as run:
            mlflow.log_params(params)
            all_metrics["peak_rss_mib"] = _peak_rss_mib()
            mlflow.log_metrics({k: float(v) for k, v in all_metrics.items()})
            mlflow.log_dict(lineage, registry.LINEAGE_ARTIFACT)
            ref_path = Path(tmp) / Path(registry.REFERENCE_ARTIFACT).name
            reference.to_parquet(ref_path, index=False)
            mlflow.log_artifact(str(ref_path), artifact_path=str(Path(registry.REFERENCE_ARTIFACT).parent))
            sample = x_oot.head(200)
            output = infer_signature(sample, booster.inplace_predict(sample).astype(np.float64)).outputs
            # Every input a double (a count is missing for a new customer): cast before pyfunc predict.
            signature = ModelSignature(
                inputs=Schema([ColSpec(DataType.double, c) for c in columns]), outputs=output
            )
            info = mlflow.xgboost.log_model(
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
            run_id = run.info.run_id
        version_tags = {
            "airflow_run_id": airflow_run_id or "",
            "reason": reason,
            "train_start": tags["train_start"],
            "train_end": tags["train_end"],
            "oot_start": tags["oot_start"],
            "oot_end": tags["oot_end"],
            "feature_service": features.FEATURE_SERVICE_NAME,
            "code_version": version_code,
            "device": fit_info["device"],
            "oot_pr_auc": f"{metrics['pr_auc']:.6f}",
        }
        registered = mlflow.register_model(info.model_uri, s.model_name, tags=version_tags)
    version = int(registered.version)
    client.update_model_version(
        s.model_name,
        str(version),
        description=f"{data_window}; OOT PR-AUC {metrics['pr_auc']:.4f} "
        f"(baseline {baseline_metrics['pr_auc']:.4f}); reason: {reason}",
    )
    registry.move_alias(client, s.model_name, registry.CHALLENGER, version)
    logger.info(
        f"registered {s.model_name} version {version} as {registry.CHALLENGER} (run {run_id}) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return {
        "version": version,
        "run_id": run_id,
        "model_uri": f"models:/{s.model_name}/{version}",
        "metrics": {k: round(float(v), 6) for k, v in all_metrics.items()},
        "device": fit_info["device"],
        "window": window.as_dict(),
    }
